"""train.ema_decay: an exponential moving average of the trained weights, used for evaluation and exports.

After every optimizer step each trainable parameter's float32 shadow moves towards it:
shadow = decay * shadow + (1 - decay) * parameter (one fused lerp over all of them). Evaluations, best/,
final/ and the test scores run with the shadows swapped in; the raw weights come back afterwards, bitwise.
Every checkpoint carries the shadows as `ema.safetensors` (written and read through Accelerate's save/load
hooks, never pickled), so a resume continues them exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ptrain.errors import CheckpointError

FILE = "ema.safetensors"
LEGACY_FILE = "custom_checkpoint_0.pkl"  # checkpoints written before ema.safetensors (Accelerate's pickle)


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

    def checkpoint_with(self, accelerator) -> None:
        """Save the shadows into every checkpoint Accelerate writes (main process) and read them back from every
        one it loads. Not `register_for_checkpointing`: Accelerate unpickles those with weights_only=False."""
        accelerator.register_save_state_pre_hook(
            lambda models, weights, folder: self.save(Path(folder)) if accelerator.is_main_process else None
        )
        accelerator.register_load_state_pre_hook(lambda models, folder: self.load(Path(folder)))

    def save(self, folder: Path) -> None:
        tensors = {f"shadow.{i}": shadow.contiguous() for i, shadow in enumerate(self.shadow)}
        save_file(tensors, folder / FILE, metadata={"decay": str(self.decay)})

    def load(self, folder: Path) -> None:
        if (folder / FILE).is_file():
            tensors = load_file(folder / FILE)
            self.load_state_dict({"shadow": [tensors[f"shadow.{i}"] for i in range(len(tensors))]})
        elif (folder / LEGACY_FILE).is_file():  # tensors and a float: loads with weights_only
            self.load_state_dict(torch.load(folder / LEGACY_FILE, map_location="cpu", weights_only=True))
        else:
            raise CheckpointError(
                f"checkpoint {folder} has no {FILE} although train.ema_decay is set; resume with the "
                "train.ema_decay of the run that wrote it"
            )


def averaged(ema: WeightAverage | None):
    """The EMA weights swapped in, or nothing to do without train.ema_decay."""
    return ema.applied() if ema is not None else nullcontext()
