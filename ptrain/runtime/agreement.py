"""What every process of a launch must agree on. A decision the main process takes (the run folder, the checkpoint
to resume) reaches every process, its refusal too; a write that every process takes part in (checkpoints, exports)
fails on every process together: one process's full disk raises the same one-line error everywhere, instead of
leaving the others waiting at a barrier. accelerate is imported by the collectives that use it: `ptrain runs` and
`ptrain check-run` reach this module through the checkpoint and run-folder code, and import no torch."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ptrain.errors import OutputError, PtrainError
from ptrain.files.atomic import WRITE_ERRORS

T = TypeVar("T")


def decided_by_main(accelerator, decide: Callable[[], T]) -> T | None:
    """`decide()` on the main process; every process gets what it returned (picklable), or raises the one-line
    error it raised (a PtrainError), instead of waiting for the main process in a collective that never comes."""
    outcome: list = [None, None]  # the decision, the error
    if accelerator.is_main_process:
        try:
            outcome[0] = decide()
        except PtrainError as err:
            if accelerator.num_processes == 1:
                raise
            outcome[1] = err
    if accelerator.num_processes > 1:
        broadcast_object_list(outcome)
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


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


def broadcast_object_list(objects: list) -> None:
    """Accelerate's (the main process's list to every process), imported at the call."""
    from accelerate.utils import broadcast_object_list as broadcast

    broadcast(objects)


def gather_object(objects: list) -> list:
    """Accelerate's (every process's list, concatenated), imported at the call."""
    from accelerate.utils import gather_object as gather

    return gather(objects)
