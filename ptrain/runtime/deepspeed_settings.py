"""The DeepSpeed configuration ptrain gives Accelerate. DeepSpeed owns part of the optimizer step (it clips and steps
inside the window's last backward), so ptrain writes its own settings for those parts into DeepSpeed's config (the
micro-batch, the accumulation, the clipping norm, the precision) and refuses a DeepSpeed config that sets them
otherwise, in one line, before any work. Precision: float32 weights and gradients with torch autocast in the forward,
as under DDP (DeepSpeed's own bf16/fp16 modes train 16-bit weights instead)."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

from ptrain.config import TrainConfig
from ptrain.errors import LaunchError

INSTALL = (
    "pip install 'ptrain[deepspeed]' (PyPI has DeepSpeed's source only; without its compiled ops: "
    "DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed)"
)
AUTOCAST_DTYPES = {"bf16": "bfloat16"}


def deepspeed_plugin(train: TrainConfig):
    """Accelerate's DeepSpeedPlugin as the launcher configured it (its ACCELERATE_DEEPSPEED_* variables or its
    DeepSpeed config file), with ptrain's settings for the parts of the step DeepSpeed owns."""
    if importlib.util.find_spec("deepspeed") is None:
        raise LaunchError(f"the accelerate config asks for DeepSpeed, which is not installed: {INSTALL}")
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin()
    config = plugin.deepspeed_config
    owned = {
        "train_micro_batch_size_per_gpu": ("train.per_device_batch_size", train.per_device_batch_size),
        "gradient_accumulation_steps": ("train.gradient_accumulation_steps", train.gradient_accumulation_steps),
        "gradient_clipping": ("train.max_grad_norm", train.max_grad_norm or 0.0),
    }
    for key, (ptrain_key, value) in owned.items():
        given = config.get(key, "auto")
        # Accelerate writes gradient_accumulation_steps: 1 into a config file that leaves it out.
        unset = given in ("auto", None) or (key == "gradient_accumulation_steps" and given == 1)
        if not unset and given != value:
            raise LaunchError(
                f"the DeepSpeed config sets {key}: {given}, but {ptrain_key} is {value}; ptrain sets it from its "
                f"config: remove {key} from the DeepSpeed config (or set {ptrain_key}={given})"
            )
        config[key] = value
    set_precision(config, train.mixed_precision)
    if plugin.zero_stage == 3:  # exports gather the whole model on the main process (checkpoints stay sharded)
        config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
        plugin.zero3_save_16bit_model = True
    return plugin


def set_precision(config: dict, mixed_precision: str) -> None:
    """float32 weights; with bf16, torch autocast around the forward and gradients reduced in float32 (an empty
    lower_precision_safe_modules list: DeepSpeed's default sends Linear gradients in bf16)."""
    for mode in ("bf16", "fp16"):
        if str(config.get(mode, {}).get("enabled", False)).lower() == "true":
            raise LaunchError(
                f"the DeepSpeed config enables {mode} (DeepSpeed then trains {mode} weights); ptrain keeps float32 "
                f"weights with autocast from train.mixed_precision: remove the {mode} section"
            )
    if mixed_precision == "fp16":
        raise LaunchError(
            "train.mixed_precision=fp16 under DeepSpeed: its fp16 mode trains fp16 weights and its torch autocast has "
            "no loss scaling under ZeRO; use bf16 or no (or FSDP/DDP, which keep fp32 weights with loss scaling)"
        )
    config["bf16"], config["fp16"] = {"enabled": False}, {"enabled": False}
    if mixed_precision in AUTOCAST_DTYPES:
        config["torch_autocast"] = {
            "enabled": True,
            "dtype": AUTOCAST_DTYPES[mixed_precision],
            "lower_precision_safe_modules": [],
        }


# Sized by Accelerate from the model's hidden size when "auto" (as in the HF and Accelerate example configs);
# left out, DeepSpeed's defaults apply: a reduce bucket of 5e8 elements, 2 GB in float32, on every process.
BUCKET_SIZES = {
    2: ("reduce_bucket_size",),
    3: ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"),
}


def fill_bucket_sizes(config: dict, model) -> None:
    """The bucket sizes the DeepSpeed config leaves out, as "auto" for Accelerate to size from the model's hidden
    size (a model whose config has none keeps DeepSpeed's defaults)."""
    zero = config.setdefault("zero_optimization", {})
    if getattr(getattr(model, "config", None), "hidden_size", None) is None:
        return
    for key in BUCKET_SIZES.get(zero.get("stage"), ()):
        zero.setdefault(key, "auto")


def check_batch(config: dict, num_processes: int) -> None:
    """A train_batch_size the DeepSpeed config fixes must be the global batch ptrain's settings give."""
    given = config.get("train_batch_size", "auto")
    expected = config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"] * num_processes
    if given not in ("auto", None) and given != expected:
        raise LaunchError(
            f"the DeepSpeed config sets train_batch_size: {given}, but train.per_device_batch_size x "
            f"train.gradient_accumulation_steps x {num_processes} processes is {expected}; remove train_batch_size"
        )
    config["train_batch_size"] = expected


@contextlib.contextmanager
def model_construction(plugin) -> Iterator[None]:
    """Around building the model: transformers builds it partitioned (deepspeed.zero.Init) whenever a ZeRO-3 config
    is registered with it, and Accelerate registers one for every ZeRO-3 launch, whatever its zero3_init_flag says.
    ptrain honours the flag: with it false the whole model is built (with the random initialisation of any other
    engine) and DeepSpeed partitions it when it wraps it; with it true, each process builds its partition only."""
    if plugin is None or plugin.zero_stage != 3 or plugin.zero3_init_flag:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()
