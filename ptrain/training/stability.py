"""Non-finite losses and gradient norms: drop the step (train.nonfinite=skip) or stop with the step named. Which
values decide depends on who owns the step: ptrain checks the loss and the gradient norm before the optimizer moves
anything; under fp16 the grad scaler skips steps with non-finite gradients itself (counted apart, as scaler skips);
DeepSpeed skips a step whose gradient norm is not finite inside its own step, before any parameter moves."""

from __future__ import annotations

from ptrain.errors import TrainingError
from ptrain.training.run import LoopState
from ptrain.training.step_verdict import StepVerdict


def step_is_finite(verdict: StepVerdict, engine_skipped: bool, scaler_owns_gradients: bool) -> bool:
    """Whether the window's step counts as finite. `engine_skipped`: DeepSpeed already dropped it (its gradient
    norm was not finite); `scaler_owns_gradients`: fp16 loss scaling, whose scaler judges the gradients."""
    if engine_skipped or not verdict.loss_finite:
        return False
    return scaler_owns_gradients or verdict.grad_norm_finite


def record_step(finite: bool, state: LoopState, policy: str, max_consecutive: int) -> bool:
    """Count a non-finite step and apply train.nonfinite; True when the step goes ahead."""
    if finite:
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
