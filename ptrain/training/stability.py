"""Non-finite losses and gradient norms: drop the step (train.nonfinite=skip) or stop with the step named."""

from __future__ import annotations

import torch

from ptrain.errors import TrainingError
from ptrain.training.state import LoopState


def step_is_finite(
    accelerator,
    window_loss: torch.Tensor,
    grad_norm: torch.Tensor | None,
    state: LoopState,
    policy: str,
    max_consecutive: int,
) -> bool:
    """True when the optimizer may step. One host sync per optimizer step.

    Under fp16 an infinite gradient norm is the grad scaler's business (it skips the step and lowers the
    scale), so only the loss is checked there. The loss is summed over processes so all agree.
    """
    values = [accelerator.reduce(window_loss.detach().float().reshape(1), "sum")]
    if grad_norm is not None and accelerator.mixed_precision != "fp16":
        values.append(grad_norm.detach().float().reshape(1))
    if bool(torch.isfinite(torch.cat(values)).all()):
        state.consecutive_nonfinite = 0
        return True
    state.consecutive_nonfinite += 1
    state.nonfinite_skips += 1
    where = f"optimizer step {state.global_step + 1} (epoch {state.epoch})"
    if policy == "stop":
        raise TrainingError(
            f"non-finite loss or gradient norm at {where}; lower train.learning_rate, keep "
            f"train.max_grad_norm set, or use train.nonfinite=skip"
        )
    if state.consecutive_nonfinite >= max_consecutive:
        raise TrainingError(
            f"{state.consecutive_nonfinite} non-finite steps in a row, the last at {where}; "
            f"lower train.learning_rate or check the data"
        )
    return False
