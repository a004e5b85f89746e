"""train.ema_decay: an exponential moving average of the trained weights, used for evaluation and exports.

After every optimizer step each trainable parameter's float32 shadow moves towards it:
shadow = decay * shadow + (1 - decay) * parameter (one fused lerp over all of them). Evaluations, best/,
final/ and the test scores run with the shadows swapped in; the raw weights come back afterwards, bitwise.
Every checkpoint carries the shadows as `ema.safetensors` (written and read through Accelerate's save/load
hooks, never pickled), so a resume continues them exactly.

Under FSDP2, whose parameters are sharded DTensors, each process averages only its own shard and writes it as
`ema-rank<N>.safetensors`: nothing is gathered. (DeepSpeed ZeRO-3 is refused: runtime/engine.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor

from ptrain.errors import CheckpointError
from ptrain.runtime.engine import Engine

FILE = "ema.safetensors"
SHARD_FILE = "ema-rank{rank}.safetensors"  # one per process when the parameters are sharded
LEGACY_FILE = "custom_checkpoint_0.pkl"  # checkpoints written before ema.safetensors (Accelerate's pickle)


def local_part(param: torch.Tensor) -> torch.Tensor:
    """The part of a parameter this process holds, as a plain tensor sharing its memory: a DTensor's local shard
    (FSDP2), or the parameter itself."""
    return param.to_local() if isinstance(param, DTensor) else param


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float, engine: Engine | None = None):
        self.decay = decay
        self.sharded = engine is not None and engine.shards_parameters
        self.params = [param for param in model.parameters() if param.requires_grad]
        self.shadow = [part.detach().float().clone() for part in self.parts()]

    def parts(self) -> list[torch.Tensor]:
        """This process's part of each parameter, looked up each time (an engine may replace it on loading)."""
        return [local_part(param) for param in self.params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [part.detach().float() for part in self.parts()], 1.0 - self.decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own again after it."""
        with torch.no_grad():
            parts = self.parts()
            own = [part.detach().clone() for part in parts]
            for part, shadow in zip(parts, self.shadow):
                part.copy_(shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                for part, value in zip(self.parts(), own):
                    part.copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        for shadow, value in zip(self.shadow, state["shadow"]):
            shadow.copy_(value)

    def checkpoint_with(self, accelerator) -> None:
        """Save the shadows into every checkpoint Accelerate writes (the main process, or each process its shard)
        and read them back from every one it loads. Not `register_for_checkpointing`: Accelerate unpickles those
        with weights_only=False."""
        rank = accelerator.process_index if self.sharded else None

        def save(models, weights, folder) -> None:
            if self.sharded or accelerator.is_main_process:
                self.save(Path(folder), rank)

        accelerator.register_save_state_pre_hook(save)
        accelerator.register_load_state_pre_hook(lambda models, folder: self.load(Path(folder), rank))

    def save(self, folder: Path, rank: int | None = None) -> None:
        tensors = {f"shadow.{i}": shadow.contiguous() for i, shadow in enumerate(self.shadow)}
        save_file(tensors, folder / file_name(rank), metadata={"decay": str(self.decay)})

    def load(self, folder: Path, rank: int | None = None) -> None:
        if (folder / file_name(rank)).is_file():
            tensors = load_file(folder / file_name(rank))
            self.load_state_dict({"shadow": [tensors[f"shadow.{i}"] for i in range(len(tensors))]})
        elif (folder / LEGACY_FILE).is_file():  # tensors and a float: loads with weights_only
            self.load_state_dict(torch.load(folder / LEGACY_FILE, map_location="cpu", weights_only=True))
        else:
            raise CheckpointError(
                f"checkpoint {folder} has no {file_name(rank)} although train.ema_decay is set; resume with the "
                "train.ema_decay (and the engine and process count) of the run that wrote it"
            )


def file_name(rank: int | None) -> str:
    return FILE if rank is None else SHARD_FILE.format(rank=rank)


def averaged(ema: WeightAverage | None):
    """The EMA weights swapped in, or nothing to do without train.ema_decay."""
    return ema.applied() if ema is not None else nullcontext()
