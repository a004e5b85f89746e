"""The train section's optimizer and learning-rate schedule keys (TrainConfig inherits them): the optimizer and its
settings, the peak learning rate and its parts, warmup and the schedule's shape. A key of an optimizer or schedule
other than the chosen one is refused when set away from its default (ptrain/training/optim.py builds both)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ptrain.config.strict import Strict

# key -> the train.optimizer / train.lr_schedule values that read it
OPTIMIZER_KEYS = {
    "adam_beta1": ("adamw",),
    "adam_beta2": ("adamw",),
    "adam_epsilon": ("adamw",),
    "sgd_momentum": ("sgd",),
    "sgd_nesterov": ("sgd",),
}
SCHEDULE_KEYS = {
    "min_lr_ratio": ("cosine", "wsd", "polynomial"),
    "wsd_decay_ratio": ("wsd",),
    "poly_power": ("polynomial",),
}


class OptimisationKeys(Strict):
    optimizer: Literal["adamw", "sgd", "adafactor"] = Field(
        "adamw",
        description="adamw: torch's fused AdamW; sgd: torch's SGD with momentum (train.sgd_momentum, "
        "train.sgd_nesterov); adafactor: transformers' Adafactor at train.learning_rate (no relative step, no "
        "parameter scaling: ptrain's schedule drives it). One process, DDP or FSDP; DeepSpeed runs adamw only.",
    )
    learning_rate: float = Field(
        5e-5, gt=0, description="Peak learning rate, reached after warmup; train.lr_schedule then shapes its decay."
    )
    weight_decay: float = Field(
        0.01,
        ge=0,
        description="Weight decay, on matrices only (biases and LayerNorm weights get none): decoupled under adamw "
        "and adafactor, an L2 term added to the gradient under sgd.",
    )
    layer_lr_decay: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Layer-wise learning-rate decay: each layer below the top one trains at learning_rate x "
        "decay^depth, the embeddings one factor lower than the lowest layer.",
    )
    head_learning_rate: float | None = Field(
        None, gt=0, description="Learning rate of the task head (outside the base model); default train.learning_rate."
    )
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW's decay rate of the gradient's running mean.")
    adam_beta2: float = Field(
        0.999, ge=0, lt=1, description="AdamW's decay rate of the squared gradient's running mean."
    )
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW's epsilon, added to the denominator for stability.")
    sgd_momentum: float = Field(0.9, ge=0, lt=1, description="SGD's momentum (train.optimizer=sgd); 0: plain SGD.")
    sgd_nesterov: bool = Field(False, description="Nesterov momentum for SGD (needs train.sgd_momentum above 0).")
    lr_schedule: Literal["linear", "cosine", "constant", "wsd", "polynomial"] = Field(
        "linear",
        description="After the linear warmup: linear decay to zero; cosine decay to train.min_lr_ratio; constant; "
        "wsd (warmup-stable-decay: flat, then a cosine decay to train.min_lr_ratio over the last "
        "train.wsd_decay_ratio of the steps after warmup); polynomial decay of power train.poly_power to "
        "train.min_lr_ratio. transformers' schedule functions, stepped once per optimizer step.",
    )
    min_lr_ratio: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="The floor of the cosine, wsd and polynomial schedules, as a share of each group's learning rate "
        "(wsd also warms up from it, as transformers' get_wsd_schedule does).",
    )
    wsd_decay_ratio: float = Field(
        0.1, gt=0, le=1, description="lr_schedule=wsd: the share of the steps after warmup spent decaying."
    )
    poly_power: float = Field(1.0, gt=0, description="lr_schedule=polynomial: the decay's power (1: linear).")
    warmup_steps: int | None = Field(
        None,
        ge=0,
        description="Optimizer steps of linear warmup from zero to train.learning_rate (or train.warmup_ratio).",
    )
    warmup_ratio: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Warmup as a share of the run's optimizer steps (instead of train.warmup_steps); neither set: "
        "no warmup.",
    )

    @model_validator(mode="after")
    def _warmup_one_way(self) -> OptimisationKeys:
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("set train.warmup_steps or train.warmup_ratio, not both")
        return self

    @model_validator(mode="after")
    def _keys_of_the_chosen_optimizer_and_schedule(self) -> OptimisationKeys:
        """A key the chosen optimizer or schedule does not read, set away from its default, would be silently
        ignored: refused, naming the key and what reads it."""
        for choice, keys in (("optimizer", OPTIMIZER_KEYS), ("lr_schedule", SCHEDULE_KEYS)):
            chosen = getattr(self, choice)
            for key, readers in keys.items():
                if chosen not in readers and getattr(self, key) != type(self).model_fields[key].default:
                    raise ValueError(
                        f"train.{key} is read only with train.{choice}={' or '.join(readers)}, and train.{choice} "
                        f"is {chosen}; remove train.{key} or set train.{choice}"
                    )
        if self.optimizer == "sgd" and self.sgd_nesterov and self.sgd_momentum == 0:
            raise ValueError("train.sgd_nesterov needs momentum: set train.sgd_momentum above 0 or remove the key")
        return self
