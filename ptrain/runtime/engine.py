"""Which engine runs a launch (one process, DDP, FSDP2, DeepSpeed ZeRO), as the start line names it, and the launches
refused before any work: an engine the launch asks for that Accelerate will not run on this device, FSDP1, and FSDP's
full-state-dict checkpoints (one process would gather the whole model and optimizer at every checkpoint)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ptrain.config import Config
from ptrain.errors import ConfigError, LaunchError

# What `accelerate launch` sets when its config's distributed_type is FSDP or DEEPSPEED.
ASKED_BY = {"fsdp2": "ACCELERATE_USE_FSDP", "deepspeed": "ACCELERATE_USE_DEEPSPEED"}
DDP_ON_CPU = "accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m ptrain train CONFIG"


@dataclass(frozen=True)
class Engine:
    name: str  # "single", "ddp", "fsdp2" or "deepspeed"
    processes: int
    zero_stage: int | None = None  # DeepSpeed's
    reshard_after_forward: bool = True  # FSDP2's: full shard, or parameters kept whole between forward and backward

    @property
    def plain(self) -> bool:
        """Whole weights and gradients on every process (the model's own modules run as they are)."""
        return self.name in ("single", "ddp")

    @property
    def shards_parameters(self) -> bool:
        """Each process holds a shard of the weights outside forward and backward (FSDP2, ZeRO-3)."""
        return self.name == "fsdp2" or (self.name == "deepspeed" and self.zero_stage == 3)

    @property
    def steps_in_backward(self) -> bool:
        """DeepSpeed clips and steps inside the window's last backward (Accelerate's backward calls engine.step)."""
        return self.name == "deepspeed"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping | None) -> Engine | None:
        """The engine a checkpoint's meta.json records (None for checkpoints from before it was recorded)."""
        if not values:
            return None
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})

    def resumes(self, saved: Engine | None) -> bool:
        """Whether a checkpoint written under `saved` loads under this engine: the same engine, and for sharded
        state the same process count (each process loads its own shards)."""
        if saved is None:  # before ptrain recorded it: one process or DDP
            return self.plain
        if self.plain and saved.plain:
            return True
        return (saved.name, saved.processes, saved.zero_stage) == (self.name, self.processes, self.zero_stage)

    def describe(self) -> str:
        """For the start line, e.g. `fsdp2 (full shard, 2 processes)` or `deepspeed zero-3 (2 processes)`."""
        count = f"{self.processes} process{'es' if self.processes > 1 else ''}"
        if self.name == "fsdp2":
            shard = "full shard" if self.reshard_after_forward else "shard gradients and optimizer state"
            return f"fsdp2 ({shard}, {count})"
        if self.name == "deepspeed":
            return f"deepspeed zero-{self.zero_stage} ({count})"
        return f"{self.name} ({count})"


def engine_of(accelerator) -> Engine:
    """The engine of a built Accelerator."""
    from accelerate.utils import DistributedType  # here: `ptrain check-run` reads an Engine without accelerate

    kind, processes = accelerator.distributed_type, accelerator.num_processes
    if kind == DistributedType.FSDP:
        plugin = accelerator.state.fsdp_plugin
        return Engine("fsdp2", processes, reshard_after_forward=bool(plugin.reshard_after_forward))
    if kind == DistributedType.DEEPSPEED:
        return Engine("deepspeed", processes, zero_stage=accelerator.state.deepspeed_plugin.zero_stage)
    return Engine("ddp" if processes > 1 else "single", processes)


def asked_engine(environ: Mapping[str, str] = os.environ) -> str | None:
    """The sharding engine the launcher's config asks for (its distributed_type), or None."""
    for name, variable in ASKED_BY.items():
        if environ.get(variable, "false").lower() == "true":
            return name
    return None


def check_engine(asked: str | None, engine: Engine, device_type: str) -> None:
    """Refuse a launch whose engine is not the one its config asks for: Accelerate turns FSDP and DeepSpeed launches
    into DDP (or one process) on a machine without GPUs, and says nothing."""
    if asked is None or asked == engine.name:
        return
    label = {"fsdp2": "FSDP", "deepspeed": "DeepSpeed"}[asked]
    raise LaunchError(
        f"the accelerate config asks for {label} ({ASKED_BY[asked]}=true), but Accelerate runs {engine.describe()} "
        f"on this {device_type} machine (it uses {label} only for GPU launches); launch on GPUs, or run DDP on the "
        f"CPU with: {DDP_ON_CPU}"
    )


def check_supported(cfg: Config, engine: Engine) -> None:
    """The settings an engine cannot run, refused before any work in one line naming the key."""
    if not engine.plain and cfg.model.dtype != "float32":
        raise ConfigError(
            f"model.dtype={cfg.model.dtype} under {engine.describe()}: FSDP and DeepSpeed keep float32 weights "
            "(ptrain sets their precision from train.mixed_precision); remove model.dtype"
        )
    if not engine.plain and cfg.model.lora is not None and cfg.model.lora.quantize is not None:
        raise ConfigError(
            f"model.lora.quantize under {engine.describe()}: ptrain runs QLoRA with one process per GPU holding the "
            "whole quantized model (DDP or a single GPU); remove model.lora.quantize or launch without FSDP/DeepSpeed"
        )
    check_optimizer(cfg, engine)
    if engine.name != "deepspeed" or engine.zero_stage != 3:
        return
    elsewhere = "use FSDP (configs/accelerate/fsdp.yaml) or ZeRO-2, or remove the key"
    if cfg.train.ema_decay is not None:
        raise ConfigError(
            "train.ema_decay under DeepSpeed ZeRO-3: not supported (ZeRO-3 keeps its small parameters whole on "
            f"every process, apart from the partitions an average would follow); {elsewhere}"
        )
    if cfg.model.lora is not None:
        raise ConfigError(
            "model.lora under DeepSpeed ZeRO-3: not supported (its partitioned weights are gathered by hooks that "
            f"peft's adapters and the merged export do not go through); {elsewhere}"
        )


def check_optimizer(cfg: Config, engine: Engine) -> None:
    """DeepSpeed's ZeRO steps the optimizers it tested (refusing others unless told zero_allow_untested_optimizer);
    Adafactor keeps plain-tensor row and column statistics that FSDP2's sharded DTensor parameters do not mix with."""
    optimizer = cfg.train.optimizer
    if engine.name == "deepspeed" and optimizer != "adamw":
        raise ConfigError(
            f"train.optimizer={optimizer} under DeepSpeed: ptrain runs DeepSpeed with AdamW only (ZeRO refuses "
            "optimizers it has not tested); set train.optimizer=adamw or launch without DeepSpeed"
        )
    if engine.name == "fsdp2" and optimizer == "adafactor":
        raise ConfigError(
            "train.optimizer=adafactor under FSDP: Adafactor's factored statistics do not work on sharded "
            "parameters; set train.optimizer=adamw or sgd, or launch without FSDP"
        )


def check_fsdp_plugin(plugin) -> None:
    """ptrain runs FSDP2 with sharded checkpoints."""
    if plugin.fsdp_version != 2:
        raise LaunchError(
            f"fsdp_version {plugin.fsdp_version} in the accelerate config: ptrain runs FSDP2; set fsdp_version: 2 "
            "under fsdp_config (configs/accelerate/fsdp.yaml)"
        )
    if plugin.state_dict_type.name != "SHARDED_STATE_DICT":
        raise LaunchError(
            f"fsdp_state_dict_type {plugin.state_dict_type.name} in the accelerate config: it gathers the whole model "
            "and optimizer on one process at every checkpoint; ptrain checkpoints stay sharded and exports are whole "
            "anyway: set fsdp_state_dict_type: SHARDED_STATE_DICT"
        )
