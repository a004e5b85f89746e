"""Writes that every process takes part in (checkpoints, exports) fail on every process together: one process's
full disk raises the same one-line error everywhere, instead of leaving the others waiting at a barrier."""

from __future__ import annotations

from collections.abc import Callable

from accelerate.utils import gather_object

from ptrain.errors import OutputError
from ptrain.outputs.atomic import WRITE_ERRORS


def on_every_process(
    accelerator, action: Callable[[], object] | None, error_for: Callable[[BaseException], OutputError]
) -> None:
    """Run `action` on this process (None: nothing to do here), then agree with the others (a collective, in place
    of a barrier): when it raised a write error on any process, every process raises that process's OutputError
    (`error_for(err)`)."""
    error = None
    try:
        if action is not None:
            action()
    except WRITE_ERRORS as err:
        error = error_for(err)
    raise_if_any_failed(accelerator, error)


def raise_if_any_failed(accelerator, error: OutputError | None) -> None:
    """Raise `error`, or the first other process's, on every process; return when none failed."""
    if accelerator.num_processes > 1:
        messages = [message for message in gather_object([str(error) if error else None]) if message]
        if messages and error is None:
            error = OutputError(messages[0])
    if error is not None:
        raise error
