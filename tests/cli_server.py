"""A fork server for the tests' `python -m ptrain ARGS` calls: one per pytest worker.

It imports ptrain and the libraries behind it once (torch, transformers, datasets, accelerate, torchmetrics:
about 5.5 s of a tiny training run's 8 s), runs no torch operator (so no thread pool exists to break a fork), and
forks a child per call. The child takes the call's working directory, sends its stdout and stderr to the files
named, runs ptrain's __main__ as `python -m ptrain` does (sys.argv, sys.path[0], SystemExit, an uncaught
exception's traceback and status 1, atexit handlers) and exits with that status: the process a user starts, less
the imports. A call in another environment than the server's gets a new server started in it (conftest.run_cli
decides), since libraries read some variables at import.

Protocol on stdin/stdout, one JSON object per line: {"main", "args", "cwd", "env", "stdout", "stderr"} (and
"stdin", a file the child reads as its standard input; /dev/null without it) in,
{"pid"} out once forked, then {"status"} (os.waitpid's) once the child has exited.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
import traceback


def preload() -> None:
    """Import what `ptrain train` imports, without running anything: also every built-in task's module and, where
    installed on a torch without CUDA, DeepSpeed (accelerate's unwrap_model imports it at the first export, and it
    imports mlflow: about 3.4 s of a forked tiny run's 5.8 s when left to each child)."""
    import importlib.util

    import torch

    import ptrain.cli
    import ptrain.tasks
    import ptrain.training.probe  # noqa: F401
    import ptrain.training.recipe  # noqa: F401

    ptrain.tasks.built_in_tasks()
    # Only where torch has no CUDA at all: asking a CUDA build for its devices (as DeepSpeed's accelerator choice
    # does) starts the CUDA runtime, which a forked child cannot use. quiet_libraries sets DS_ACCELERATOR (no CUDA)
    # and MLFLOW_LOGGING_LEVEL before DeepSpeed first loads.
    if not torch.backends.cuda.is_built() and importlib.util.find_spec("deepspeed") is not None:
        # as `ptrain` does before anything imports DeepSpeed: it imports mlflow, which reads MLFLOW_LOGGING_LEVEL once,
        # at import (without it a child printed mlflow's INFO store set-up lines that a fresh `ptrain` never prints)
        ptrain.cli.quiet_libraries()
        import deepspeed  # noqa: F401


def run_child(request: dict) -> None:
    """In the forked child: become `python -m ptrain ARGS` in request's cwd, then exit with its status."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])  # the server's own but for PYTEST_CURRENT_TEST
    for fd, path, flags in (
        (0, request.get("stdin", os.devnull), os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.path[0] = os.getcwd()  # what `python -m` puts first
    sys.argv = [str(request["main"]), *request["args"]]
    status = 0
    try:
        runpy.run_module("ptrain", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        status = exit_status(exit_.code)
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
        status = 1
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(status)


def exit_status(code) -> int:
    """The process status sys.exit(code) gives: None is 0, an int itself, anything else printed and 1."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def serve() -> None:
    requests = os.fdopen(os.dup(0), "r")
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # a library's stray print must not reach the protocol
    preload()
    for line in requests:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                requests.close()
                replies.close()
                run_child(request)
            finally:
                os._exit(70)  # run_child exits itself; this only catches a failure setting the child up
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"status": status}) + "\n")


if __name__ == "__main__":
    serve()
