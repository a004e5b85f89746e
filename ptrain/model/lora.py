"""model.lora through peft: low-rank adapters on the encoder's linear layers train instead of its weights, and the
task head (every module outside the base model) trains whole and is saved with them. The export merges the adapters
into a plain model (ptrain/outputs/export.py); peft is imported only by runs that use it (it takes 2.5 s)."""

from __future__ import annotations

import copy
import sys

import torch

from ptrain.config import LoraSettings
from ptrain.errors import ConfigError, first_line

ALL_LINEAR = "all-linear"  # peft's word for every linear layer but the output layer


def add_lora(model: torch.nn.Module, settings: LoraSettings, task_type: str):
    """`model` wrapped by peft's get_peft_model (in place: its target layers become LoRA layers). Base weights are
    frozen; the adapters and the task head (peft's modules_to_save: a trained copy beside the frozen original)
    train. Under FSDP the frozen weights are sharded like the rest (DeepSpeed ZeRO-3 is refused: engine.py)."""
    import peft

    targets = target_modules(model, settings)
    config = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        modules_to_save=head_modules(model),
        task_type=task_type,
    )
    try:
        return peft.get_peft_model(model, config)
    except ValueError as err:  # e.g. a target that is no layer type LoRA adapts (a LayerNorm)
        raise ConfigError(f"model.lora.target_modules {targets}: {first_line(err)}") from None


def target_modules(model: torch.nn.Module, settings: LoraSettings) -> list[str] | str:
    """The modules to adapt: as configured (every name must match one), or peft's default for the model type
    (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING: BERT query and value, GPT-2 c_attn, Llama q_proj and
    v_proj, after the LoRA paper's choice of the attention's query and value projections)."""
    names = settings.target_modules
    if names == [ALL_LINEAR]:
        return ALL_LINEAR
    if names is None:
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        model_type = getattr(model.config, "model_type", None)
        if model_type not in DEFAULTS:
            raise ConfigError(
                f"model.lora.target_modules: peft has no default for model type {model_type}; name the layers to "
                f"adapt (linear layers here: {', '.join(linear_layer_names(model))}) or give [{ALL_LINEAR}]"
            )
        return list(DEFAULTS[model_type])
    keys = [key for key, _ in model.named_modules()]
    for name in names:
        if not any(key == name or key.endswith("." + name) for key in keys):  # peft's matching rule
            raise ConfigError(
                f"model.lora.target_modules: no module '{name}' in {type(model).__name__}; "
                f"its linear layers: {', '.join(linear_layer_names(model))} (or give [{ALL_LINEAR}])"
            )
    return list(names)


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """The distinct names of the base model's linear layers (GPT-2's Conv1D included), in model order."""
    names = {}
    for key, module in model.base_model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            names[key.rpartition(".")[2]] = None
    return list(names)


def head_modules(model: torch.nn.Module) -> list[str]:
    """The top-level modules outside the base model that hold weights: the task head (BERT's classifier,
    DistilBERT's pre_classifier and classifier, GPT-2's score), new weights that must train."""
    base = model.base_model
    return [
        name
        for name, child in model.named_children()
        if child is not base and next(child.parameters(), None) is not None
    ]


def plain_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a LoRA model (what fast paths patch and parameter groups read), else `model`."""
    return model.get_base_model() if is_peft_model(model) else model


def is_peft_model(model) -> bool:
    peft = sys.modules.get("peft")  # a model wrapped by peft means peft is imported; runs without LoRA never do
    return peft is not None and isinstance(model, peft.PeftModel)


def whole_twin(model, state_dict: dict[str, torch.Tensor]):
    """A LoRA model like `model` holding `state_dict` (its weights gathered whole, e.g. from FSDP2's shards): built
    on the meta device from `model`'s config and adapter settings, then given the gathered tensors, so no second
    copy of the weights is made. Buffers outside the state dict (BERT's position ids) are taken from `model`, where
    no engine shards them."""
    import peft

    base = model.get_base_model()
    with torch.device("meta"):
        twin = peft.get_peft_model(type(base)._from_config(base.config), copy.deepcopy(model.peft_config["default"]))
    twin.load_state_dict(state_dict, assign=True)
    buffers = dict(model.named_buffers())
    for name, buffer in list(twin.named_buffers()):
        if buffer.is_meta:
            owner, _, leaf = name.rpartition(".")
            twin.get_submodule(owner).register_buffer(leaf, buffers[name].detach().cpu().clone(), persistent=False)
    return twin
