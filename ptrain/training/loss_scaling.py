"""fp16's grad scaler around ptrain's optimizer step (a no-op without one: bf16, fp32, DeepSpeed). Two duties: a step
ptrain drops still updates the scaler, which unscaled the window's gradients for clipping (else the next unscale
fails); and the steps the scaler drops itself, for non-finite gradients, are told apart, from its scale, which falls
exactly then (Accelerate's step_was_skipped misses them for fused AdamW, which takes the scaler's found-inf flag into
its own kernel). One host read of the scale per step, under fp16 only."""

from __future__ import annotations


class LossScaling:
    def __init__(self, accelerator):
        self.scaler = accelerator.scaler
        self.scale = self.scaler.get_scale() if self.scaler is not None else None

    def step(self, optimizer) -> bool:
        """optimizer.step(); True when the grad scaler skipped it."""
        optimizer.step()
        if self.scaler is None:
            return False
        before, self.scale = self.scale, self.scaler.get_scale()
        return self.scale < before

    def skip(self) -> None:
        """A step ptrain drops (a non-finite loss): the scaler updates as after a step of its own."""
        if self.scaler is not None:
            self.scaler.update()
            self.scale = self.scaler.get_scale()
