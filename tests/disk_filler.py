"""A ptrain callback (train.callbacks) for tests/test_full_disk.py: the disk fills up, then frees, at named events.

PTRAIN_TEST_FILL and PTRAIN_TEST_FREE list events as EVENT:STEP (step_end, checkpoint, evaluate), e.g.
"step_end:2,evaluate:3". Filling preallocates a ballast file (PTRAIN_TEST_BALLAST, on the small filesystem the run
writes to) that leaves PTRAIN_TEST_LEAVE_BYTES free: metrics and TensorBoard events still fit, a checkpoint or an
export does not. With PTRAIN_TEST_DISK=inject (no small filesystem could be mounted), filling makes Accelerate's
save_state and save_pretrained write their files and then raise ENOSPC instead, and freeing undoes that.
"""

import errno
import os
import shutil
from pathlib import Path

import accelerate
import transformers


class DiskFiller:
    def on_step_end(self, view):
        at(f"step_end:{view.step}")

    def on_checkpoint(self, view):
        at(f"checkpoint:{view.step}")

    def on_evaluate(self, view):
        at(f"evaluate:{view.step}")


def at(event: str) -> None:
    injected = os.environ.get("PTRAIN_TEST_DISK") == "inject"
    if event in os.environ.get("PTRAIN_TEST_FILL", "").split(","):
        leave = int(os.environ.get("PTRAIN_TEST_LEAVE_BYTES", 1 << 20))
        inject() if injected else fill(Path(os.environ["PTRAIN_TEST_BALLAST"]), leave)
    if event in os.environ.get("PTRAIN_TEST_FREE", "").split(","):
        uninject() if injected else Path(os.environ["PTRAIN_TEST_BALLAST"]).unlink()


def fill(ballast: Path, leave: int) -> None:
    """Preallocate `ballast` so that `leave` bytes stay free on its filesystem."""
    size = shutil.disk_usage(ballast.parent).free - leave
    with open(ballast, "ab") as handle:
        os.posix_fallocate(handle.fileno(), handle.tell(), size)


WRITERS = ((accelerate.Accelerator, "save_state"), (transformers.PreTrainedModel, "save_pretrained"))


def inject() -> None:
    for owner, name in WRITERS:
        setattr(owner, name, failing(getattr(owner, name)))


def uninject() -> None:
    for owner, name in WRITERS:
        setattr(owner, name, getattr(owner, name).original)


def failing(write):
    def wrapper(*args, **kwargs):
        write(*args, **kwargs)  # the files are half there when the disk fills up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    wrapper.original = write
    return wrapper
