"""Two machines simulated on one: `accelerate launch --num_machines 2 --machine_rank R` twice over 127.0.0.1 (CPU,
gloo), with one output folder or a folder per node (output_dir and data.cache_dir apart, as node-local disks are).
They train like one process; only the main process writes; each node fills its own cache first; a killed or a
frozen node ends the survivor in one line; train.resume=auto continues the run (refused when folders are apart)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch

from ptrain.runtime import lost_peer
from ptrain.runtime.distributed import process_group_settings
from ptrain.training.checkpointing import node_resume
from ptrain.training.checkpointing.checkpoint import REQUIRED_FILES, Checkpoint
from tests.conftest import CONFIGS, REPO, free_port, run_cli

HOLD = f"train.callbacks={REPO / 'tests' / 'hold_at_checkpoint.py'}:HoldAtCheckpoint"
# 160 rows, global batch 32 (one process x 32, or two nodes x 16): 5 optimizer steps, a checkpoint every 2. No
# dropout: each process draws its own masks, and only without them can two processes reach one's metrics.
SETTINGS = {
    "data.max_train_rows": "160",
    "data.max_eval_rows": "100",
    "train.epochs": "1",
    "train.checkpoint_every_steps": "2",
    "model.scratch_config.hidden_dropout_prob": "0",
    "model.scratch_config.attention_probs_dropout_prob": "0",
}
WAIT = 300  # seconds for any launch: a hang fails the test instead of blocking the suite


def overrides(folder: Path, per_device_batch_size: int, *extra: str) -> list[str]:
    """configs/tiny.yaml with SETTINGS, writing to folder/runs and caching in folder/cache."""
    values = {"output_dir": folder / "runs", "data.cache_dir": folder / "cache", **SETTINGS}
    values["train.per_device_batch_size"] = per_device_batch_size
    return [str(CONFIGS / "tiny.yaml"), *(f"{key}={value}" for key, value in values.items()), *extra]


class TwoNodes:
    """Node 0 and node 1 of one launch, each `accelerate launch` with its own arguments and log file."""

    def __init__(self, logs: list[Path], commands: list[list[str]], hold: Path | None):
        self.logs, self.processes = logs, []
        for rank, (command, log) in enumerate(zip(commands, logs)):
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            if hold is not None and rank == 1:
                env["PTRAIN_TEST_HOLD_FILE"] = str(hold)
            with open(log, "w") as sink:
                self.processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=sink))

    def wait(self, rank: int) -> int:
        try:
            return self.processes[rank].wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"node {rank} still running after {WAIT} s:\n{self.log(rank)[-3000:]}")

    def log(self, rank: int) -> str:
        return self.logs[rank].read_text()

    def signal(self, rank: int, number: int) -> None:
        """To the node's launcher and its training processes (each in a session of its own)."""
        launcher = psutil.Process(self.processes[rank].pid)
        for process in [launcher, *launcher.children(recursive=True)]:
            with suppress(psutil.NoSuchProcess):  # ended meanwhile
                process.send_signal(number)

    def stop_node_1_when_held(self, held: Path, number: int) -> tuple[int, float]:
        """Once node 1 holds after its checkpoint (it wrote `held`), send it signal `number`; node 0's exit code
        and the seconds it took to end after the signal."""
        self.wait_for(held)
        sent_at = time.monotonic()
        self.signal(1, number)
        code = self.wait(0)
        return code, time.monotonic() - sent_at

    def wait_for(self, path: Path) -> None:
        deadline = time.monotonic() + WAIT
        while not path.exists():
            ended = [rank for rank, p in enumerate(self.processes) if p.poll() is not None]
            assert not ended, f"node {ended} ended early:\n{self.log(ended[0])[-3000:]}"
            assert time.monotonic() < deadline, f"{path} never appeared"
            time.sleep(0.1)


@contextmanager
def two_nodes(
    logs: Path, args: list[list[str]], module: str = "ptrain", per_node: int = 1, hold: Path | None = None, mount=None
):
    """Launch node 0 and node 1 on one free port, logging to LOGS-node0.log and LOGS-node1.log (args: each node's
    arguments after `-m MODULE`); mount: (bind_mount_prefix(), OWN, OVER) starts node 1 with folder OWN mounted
    over OVER. On leaving, kill whatever still runs."""
    port = free_port()
    commands = [
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2"]
        + ["--machine_rank", str(rank), "--num_processes", str(2 * per_node)]
        + ["--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "-m", module, *node_args]
        for rank, node_args in enumerate(args)
    ]
    if mount:
        prefix, own, over = mount
        commands[1] = [*prefix, str(own), str(over), *commands[1]]
    launched = TwoNodes([logs.with_name(f"{logs.name}-node{rank}.log") for rank in (0, 1)], commands, hold)
    try:
        yield launched
    finally:
        for rank, process in enumerate(launched.processes):
            if process.poll() is None:
                with suppress(psutil.NoSuchProcess):
                    launched.signal(rank, signal.SIGKILL)
                process.wait()


@cache
def bind_mount_prefix() -> list[str] | None:
    """How to start a command in a mount namespace of its own with one folder bind-mounted over another (then
    `PREFIX OWN OVER COMMAND...`): as root, or through a user namespace; None where neither is allowed."""
    mount_then_run = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    for flags in (["--mount"], ["--user", "--map-root-user", "--mount"]):
        prefix = ["unshare", *flags, "--propagation", "private", "sh", "-c", mount_then_run, "sh"]
        with tempfile.TemporaryDirectory() as own, tempfile.TemporaryDirectory() as over:
            with suppress(OSError, subprocess.SubprocessError):
                if subprocess.run([*prefix, own, over, "true"], capture_output=True, timeout=60).returncode == 0:
                    return prefix
    return None


def final_metrics(output_dir: Path) -> dict:
    (run_dir,) = (output_dir / "tiny").iterdir()
    return json.loads((run_dir / "metrics.json").read_text())["final"]


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("ptrain: error: ")]


def assert_no_traceback_from_ptrain(log: str) -> None:
    """The training process's own output; the launcher adds torch elastic's ChildFailedError report after it."""
    assert not [line for line in log.splitlines() if line.startswith("[rank")], log[-3000:]
    assert "third_party/gloo" not in log


def assert_same_metrics(metrics: dict, reference: dict) -> None:
    for name, value in reference.items():
        assert metrics[name] == pytest.approx(value, rel=1e-4), name  # bf16 sums of 16 rows vs 32


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("one_process")
    result = run_cli("train", *overrides(folder, 32))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ptrain: 5 optimizer steps per epoch, 5 in total" in result.stdout
    return final_metrics(folder / "runs")


@pytest.fixture(scope="module")
def per_node(tmp_path_factory) -> SimpleNamespace:
    """A folder per node: node 0 writes node0/, node 1 only its node1/cache."""
    folder = tmp_path_factory.mktemp("per_node")
    args = [["train", *overrides(folder / f"node{rank}", 16)] for rank in (0, 1)]
    with two_nodes(folder / "train", args) as launched:
        codes = [launched.wait(0), launched.wait(1)]
    assert codes == [0, 0], launched.log(0)[-3000:] + launched.log(1)[-3000:]
    metrics = final_metrics(folder / "node0" / "runs")
    return SimpleNamespace(folder=folder, logs=[launched.log(0), launched.log(1)], metrics=metrics)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_folder_per_node_trains_like_one_process_and_only_the_main_process_writes(per_node, one_process):
    folder, logs = per_node.folder, per_node.logs
    assert "per-device batch 16 x accumulation 1 x 2 = global batch 32" in logs[0]
    assert "ptrain: 5 optimizer steps per epoch, 5 in total" in logs[0]
    assert_same_metrics(per_node.metrics, one_process)
    (run_dir,) = (folder / "node0" / "runs" / "tiny").iterdir()
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1 and (run_dir / "final" / "model.safetensors").is_file()
    assert not (folder / "node1" / "runs").exists()  # node 1 writes no run outputs, not even a folder
    # each node tokenized into its own cache (both cold): the same files
    assert sorted(p.name for p in (folder / "node1" / "cache").iterdir()) == sorted(
        p.name for p in (folder / "node0" / "cache").iterdir()
    )
    assert not [line for log in logs for line in log.splitlines() if "cannot see the run folder" in line]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_killed_node_ends_the_survivor_in_one_line_and_resume_auto_completes_the_run(tmp_path, per_node, one_process):
    """One shared folder. Node 1 is killed (launcher and training process, SIGKILL) right after the checkpoint of
    step 2; node 0 waits in a collective for it. Both relaunched with train.resume=auto end as the uninterrupted
    run (folder per node, same processes) ends, to the bit."""
    args = ["train", *overrides(tmp_path, 16, HOLD)]
    with two_nodes(tmp_path / "killed", [args, args], hold=tmp_path / "held") as launched:
        code, seconds = launched.stop_node_1_when_held(tmp_path / "held", signal.SIGKILL)
    log = launched.log(0)
    assert code != 0 and seconds < 60, log[-3000:]
    (error,) = error_lines(log)
    # gloo names the peer's address in some of its errors and not in others (CI saw both): it is optional
    assert re.match(r"ptrain: error: lost rank 1 \(node 1 of 2\)( at 127\.0\.0\.1:\d+)?: its connection closed", error)
    assert error.endswith(f"accelerate launch ... -m ptrain {' '.join(args)} train.resume=auto")
    assert_no_traceback_from_ptrain(log)

    with two_nodes(tmp_path / "resumed", [[*args, "train.resume=auto"]] * 2) as launched:
        codes = [launched.wait(0), launched.wait(1)]
    assert codes == [0, 0], launched.log(0)[-3000:] + launched.log(1)[-3000:]
    assert "checkpoints/step-00000002 in" in launched.log(0)  # "ptrain: resumed from ..."
    metrics = final_metrics(tmp_path / "runs")
    assert metrics == per_node.metrics
    assert_same_metrics(metrics, one_process)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_frozen_node_ends_the_survivor_at_the_collective_timeout_and_node_local_disks_are_told(tmp_path):
    """Node 1 is stopped (SIGSTOP) after the checkpoint of step 2: node 0 gives up after
    train.collective_timeout_seconds (20 s: the main process's own work between two collectives, such as its
    TensorBoard set-up, must fit in it on a loaded machine). Each node has a disk of its own: node 1 runs in a
    mount namespace where its disk is mounted at the path of node 0's, so it does not see the run folder, and both
    nodes say at the start that train.resume will be refused (the refusal itself:
    test_a_process_must_read_the_whole_checkpoint_and_its_own_rng_state). Where no mount namespace can be made,
    the folders are apart by path only."""
    prefix, disk, node1_disk = bind_mount_prefix(), tmp_path / "disk", tmp_path / "node1_disk"
    if prefix:
        disk.mkdir()
        node1_disk.mkdir()
        args = [["train", *overrides(disk, 16, HOLD)]] * 2
    else:
        args = [["train", *overrides(tmp_path / f"node{rank}", 16, HOLD)] for rank in (0, 1)]
    mount = (prefix, node1_disk, disk) if prefix else None
    timeout = ["train.collective_timeout_seconds=20"]
    with two_nodes(tmp_path / "frozen", [a + timeout for a in args], hold=tmp_path / "held", mount=mount) as launched:
        code, seconds = launched.stop_node_1_when_held(tmp_path / "held", signal.SIGSTOP)
    log = launched.log(0)
    assert code != 0 and 15 < seconds < 80, log[-3000:]  # the 20 s run from node 0's collective, before the stop
    (error,) = error_lines(log)
    assert error.startswith("ptrain: error: lost rank 1 (node 1 of 2): it did not answer for 20 s"), error
    assert_no_traceback_from_ptrain(log)
    if not prefix:
        pytest.skip("no mount namespace here (root or user namespaces): node-local disks not simulated")
    (run_dir,) = (disk / "runs" / "tiny").iterdir()
    for rank in (0, 1):
        (warning,) = [line for line in launched.log(rank).splitlines() if line.startswith("ptrain: warning: ")]
        assert warning.startswith(f"ptrain: warning: rank 1 (node 1 of 2) cannot see the run folder {run_dir}:")
    written = {path.name for path in node1_disk.rglob("*")}  # node 1's disk: its own cache, no run outputs
    assert any(name.endswith(".arrow") for name in written)
    assert not written & {"metrics.json", "config.yaml", "model.safetensors", "final", "best", "running.json"}
    assert not [name for name in written if name.startswith("events.out.tfevents")]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_each_node_fills_its_own_cache_first(tmp_path):
    """Two nodes of two processes, a cache folder per node: the main process writes node 0's cache, then the first
    process of node 1 writes node 1's; the second process of each node reads its node's (tokenization uses the
    same caches_first: test_distributed checks that on one node)."""
    args = [[str(tmp_path / f"node{rank}")] for rank in (0, 1)]
    with two_nodes(tmp_path / "caches", args, module="tests.cache_order_probe", per_node=2) as launched:
        codes = [launched.wait(0), launched.wait(1)]
    assert codes == [0, 0], launched.log(0)[-3000:] + launched.log(1)[-3000:]
    lines = sorted(line for rank in (0, 1) for line in launched.log(rank).splitlines() if line.startswith("process "))
    assert lines == [f"process {rank}/4 cache hit {rank % 2 == 1}" for rank in range(4)]
    assert (tmp_path / "node1" / "cache.txt").read_text() == "written by process 2"


GLOO_CLOSED = (
    "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [10.0.0.2]:31645. This "
    "is typically caused by a remote worker crashing."
)
GLOO_TIMEOUT = "[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 300000ms for recv"


@pytest.fixture
def two_process_group(monkeypatch):
    """torch.distributed as a launched rank 0 of 2 (one process per node) sees it."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")


@pytest.mark.parametrize(
    "err, start",
    [
        (RuntimeError(GLOO_CLOSED), "lost rank 1 (node 1 of 2) at 10.0.0.2:31645: its connection closed"),
        (RuntimeError(GLOO_TIMEOUT), "lost rank 1 (node 1 of 2): it did not answer for 300 s"),
        (torch.distributed.DistNetworkError("Connection reset by peer"), "lost rank 1 (node 1 of 2): its connection"),
    ],
)
def test_a_lost_peer_is_told_in_one_line(two_process_group, err, start):
    message = lost_peer.lost_peer_message(err)
    assert message.startswith(start) and "\n" not in message and message.endswith("train.resume=auto")


def test_other_commands_are_told_to_start_again():
    assert lost_peer.how_to_continue("eval", {}) == (
        "Start every node's launch command again (torchrun ... -m ptrain eval ...)"
    )


@pytest.mark.parametrize(
    "err",
    [
        RuntimeError("CUDA out of memory"),
        RuntimeError("my callback timed out"),  # the words, but not from the process group
        RuntimeError("[third_party/gloo/gloo/allreduce.cc:42] enforce fail: op.preamble.length <= op.nbytes"),
        ValueError(GLOO_CLOSED),
    ],
)
def test_other_errors_are_not_taken_for_a_lost_peer(two_process_group, err):
    assert lost_peer.lost_peer_message(err) is None


def test_without_a_process_group_nothing_is_a_lost_peer():
    assert not torch.distributed.is_initialized()
    assert lost_peer.lost_peer_message(RuntimeError(GLOO_CLOSED)) is None


def test_a_process_must_read_the_whole_checkpoint_and_its_own_rng_state(tmp_path):
    folder = tmp_path / "step-2"
    checkpoint = Checkpoint(folder, {"loop": {"global_step": 2}})
    assert node_resume.unreadable(checkpoint, 1) == str(folder)  # on another node's disk
    folder.mkdir()
    for name in [*REQUIRED_FILES, "random_states_0.pkl"]:
        (folder / name).touch()
    assert node_resume.unreadable(checkpoint, 0) is None
    assert node_resume.unreadable(checkpoint, 1) == f"random_states_1.pkl in {folder}"  # Accelerate would skip it
    sharded = Checkpoint(folder, {"loop": {"global_step": 2}, "engine": {"name": "fsdp2", "processes": 2}})
    assert node_resume.unreadable(sharded, 0) == (
        f"pytorch_model_fsdp_0/.metadata, optimizer_0/.metadata in {folder}"  # each engine's own files
    )


@pytest.mark.parametrize("seconds", [10, 300, 600, 1800])
def test_the_collective_timeout_reaches_the_process_group(seconds):
    """Accelerate drops a timeout equal to its default (600 s): that one is sent a microsecond longer."""
    timeout = process_group_settings(seconds).to_kwargs()["timeout"]
    assert abs(timeout.total_seconds() - seconds) < 1e-3
