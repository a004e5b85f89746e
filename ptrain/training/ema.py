"""train.ema_decay: an exponential moving average of the trained weights, used for evaluation and exports.

After every optimizer step each trainable parameter's float32 shadow moves towards it:
shadow = decay * shadow + (1 - decay) * parameter (one fused lerp over all of them). Evaluations, best/,
final/ and the test scores run with the shadows swapped in; the raw weights come back afterwards, bitwise.
The shadows are registered with Accelerate, so checkpoints carry them and a resume continues them exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = [param for param in model.parameters() if param.requires_grad]
        self.shadow = [param.detach().float().clone() for param in self.params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [param.detach().float() for param in self.params], 1.0 - self.decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own again after it."""
        with torch.no_grad():
            own = [param.detach().clone() for param in self.params]
            for param, shadow in zip(self.params, self.shadow):
                param.copy_(shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, value in zip(self.params, own):
                    param.copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        for shadow, value in zip(self.shadow, state["shadow"]):
            shadow.copy_(value)


def averaged(ema: WeightAverage | None):
    """The EMA weights swapped in, or nothing to do without train.ema_decay."""
    return ema.applied() if ema is not None else nullcontext()
