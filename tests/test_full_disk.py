"""A full disk during a checkpoint, an export, metrics or TensorBoard events: one `ptrain:` line naming the path,
exit code 1, no traceback, the previous checkpoint and exports intact, and train.resume=auto completes the run once
there is space again; with train.on_checkpoint_error=warn a failed periodic checkpoint is one warning.

The runs write to a small tmpfs mounted for this module (as root); where mounting is not allowed, the same callback
(tests/disk_filler.py) injects ENOSPC into the writes instead, so the same assertions run either way.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ptrain.cli import main
from ptrain.errors import OutputError
from tests.conftest import CONFIGS, REPO, run_cli, tiny_overrides

# 96 rows, batch 32: 3 optimizer steps, a checkpoint after each, one evaluation (at the end).
SETTINGS = {
    "data.max_eval_rows": "32",
    "train.epochs": "1",
    "train.checkpoint_every_steps": "1",
    "train.log_every_steps": "1",
    "train.callbacks": f"{REPO / 'tests' / 'disk_filler.py'}:DiskFiller",
}


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    """(a folder on a 160 MiB tmpfs, "fill"), or (a plain folder, "inject") where mounting is not allowed or
    PTRAIN_TEST_DISK=inject asks for it."""
    folder = tmp_path_factory.mktemp("small_disk")
    mount = ["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(folder)]
    mounted = (
        os.environ.get("PTRAIN_TEST_DISK") != "inject"
        and shutil.which("mount") is not None
        and subprocess.run(mount, capture_output=True).returncode == 0
    )
    yield folder, "fill" if mounted else "inject"
    if mounted:
        subprocess.run(["umount", str(folder)], check=True)


def train(out: Path, disk: tuple[Path, str], cache: Path, *extra: str, **events: str) -> subprocess.CompletedProcess:
    """`ptrain train` into out/runs with the disk filling and freeing at `events` (fill=..., free=...)."""
    folder, mode = disk
    env = {"PTRAIN_TEST_DISK": mode, "PTRAIN_TEST_BALLAST": str(folder / "ballast")}
    env.update({f"PTRAIN_TEST_{key.upper()}": value for key, value in events.items()})
    overrides = tiny_overrides(out, cache, rows=96, **SETTINGS)
    return run_cli("train", str(CONFIGS / "tiny.yaml"), *overrides, *extra, env=env)


def check_run(run_dir: Path) -> tuple[int, str]:
    """`ptrain check-run RUN` (the CLI's main, in this process): exit code and output."""
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(["check-run", str(run_dir)])
    return code, out.getvalue()


def ptrain_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ptrain: error") or "ptrain: warning" in line]


@pytest.fixture(scope="module")
def stopped(small_disk, cache_dir):
    """One run, three starts: the disk fills before the checkpoint of step 2 (stop); the resume finds space for
    that one, then the disk fills after best/ is written, before final/ (stop); the last resume completes."""
    out = small_disk[0] / "stopped"
    results = {"checkpoint": train(out, small_disk, cache_dir, fill="step_end:2")}
    (run_dir,) = (out / "runs" / "tiny").iterdir()
    results["after_checkpoint"] = check_run(run_dir)
    (small_disk[0] / "ballast").unlink(missing_ok=True)
    results["export"] = train(out, small_disk, cache_dir, "train.resume=auto", fill="evaluate:3")
    results["after_export"] = check_run(run_dir)
    (small_disk[0] / "ballast").unlink(missing_ok=True)
    results["completed"] = train(out, small_disk, cache_dir, "train.resume=auto")
    results["after_completion"] = check_run(run_dir)
    return run_dir, results


def assert_stopped_in_one_line(result: subprocess.CompletedProcess, failed: str, resumable: str) -> None:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr
    (line,) = ptrain_lines(result.stderr + result.stdout)
    assert line.startswith(f"ptrain: error: {failed}") and "No space left on device" in line, line
    assert f"a resume continues from the intact checkpoint {resumable}" in line, line
    assert "free space (or fix the folder), then continue with: ptrain train " in line and line.endswith(
        "train.resume=auto"
    )


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_stops_in_one_line_on_the_previous_checkpoint(stopped):
    run_dir, results = stopped
    checkpoints = run_dir / "checkpoints"
    failed = f"checkpoint at step 2 could not be written to {checkpoints / 'step-00000002'} ("
    assert_stopped_in_one_line(results["checkpoint"], failed, f"{checkpoints / 'step-00000001'} (step 1)")
    code, report = results["after_checkpoint"]
    assert (
        code == 0 and f"{checkpoints / 'step-00000001'}: intact (step 1, single (1 process), 4 files checked)" in report
    ), report
    assert "step-00000002" not in report and ".tmp" not in report  # nothing half-written left behind


@pytest.mark.slow
def test_a_full_disk_during_an_export_keeps_the_earlier_outputs_and_resume_completes(stopped):
    run_dir, results = stopped
    failed = f"cannot write {run_dir / 'final'} ("
    assert_stopped_in_one_line(results["export"], failed, f"{run_dir / 'checkpoints' / 'step-00000003'} (step 3)")
    code, report = results["after_export"]
    assert code == 0 and f"{run_dir / 'best'}: intact" in report and "final" not in report, report
    assert "ptrain: resumed from" in results["export"].stdout  # the first stop was resumable

    completed = results["completed"]
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "ptrain: resumed from" in completed.stdout and (run_dir / "metrics.json").is_file()
    code, report = results["after_completion"]
    assert code == 0 and f"{run_dir / 'final'}: intact" in report, report
    assert not [path for path in run_dir.rglob("*") if path.suffix in (".tmp", ".old")]


@pytest.mark.slow
def test_on_checkpoint_error_warn_trains_on_after_one_warning(small_disk, cache_dir):
    out = small_disk[0] / "warned"
    result = train(out, small_disk, cache_dir, "train.on_checkpoint_error=warn", fill="step_end:2", free="step_end:3")
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (out / "runs" / "tiny").iterdir()
    (line,) = ptrain_lines(result.stderr + result.stdout)
    checkpoints = run_dir / "checkpoints"
    assert line.startswith(f"ptrain: warning: checkpoint at step 2 could not be written to {checkpoints}"), line
    assert "training goes on (train.on_checkpoint_error=warn)" in line and "step-00000001 (step 1)" in line
    assert (run_dir / "metrics.json").is_file() and "Traceback" not in result.stderr
    assert sorted(path.name for path in checkpoints.iterdir()) == ["step-00000001", "step-00000003"]


@pytest.mark.slow
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # the writer thread's traceback
def test_full_disk_under_metrics_and_tensorboard_events_is_one_error_naming_the_file(small_disk, capfd):
    """metrics.jsonl fails at its flush; TensorBoard's writer thread fails on its own and the error comes back at
    the writer's next call (here close): each is an OutputError naming its file, with no thread traceback."""
    from ptrain.outputs.tracking import Tracker

    folder, mode = small_disk
    run_dir = folder / "tracked"
    run_dir.mkdir()
    tracker = Tracker(run_dir, enabled=True)
    with full_disk(folder, mode, tracker):
        with pytest.raises(OutputError, match=f"cannot write {run_dir / 'metrics.jsonl'} .No space left on device"):
            tracker.scalars({"train/loss": 1.0}, step=1)
        with pytest.raises(OutputError, match=f"cannot write {run_dir}/events.out.tfevents.* .No space left on"):
            tracker.text("big", "x" * 500_000)  # queued: the writer thread meets the full disk
            tracker.close()  # the writer raises its thread's error at its next call at the latest
        tracker.abandon()  # what a stopping run does: quiet
    assert "Traceback" not in capfd.readouterr().err


@contextlib.contextmanager
def full_disk(folder: Path, mode: str, tracker):
    """No free byte left on the small filesystem, or (inject) every write of the tracker's files failing."""
    if mode == "fill":
        from tests.disk_filler import fill

        fill(folder / "tracker-ballast", leave=0)
        try:
            yield
        finally:
            (folder / "tracker-ballast").unlink()
        return
    from tensorboard.compat.tensorflow_stub.io import gfile

    real_append, real_stream = gfile.LocalFileSystem.append, tracker.stream
    tracker.stream = open("/dev/full", "a")  # every write fails with ENOSPC

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    gfile.LocalFileSystem.append = no_space
    try:
        yield
    finally:
        gfile.LocalFileSystem.append = real_append
        real_stream.close()
