"""model.lora through peft: low-rank adapters on the model's linear layers train instead of its weights, and a new
task head (every module outside the base model but a causal LM's output layer) trains whole and is saved with them.
The export merges the adapters into a plain model (ptrain/outputs/export.py); peft is imported only by runs that use
it (it takes 2.5 s). With model.lora.quantize (QLoRA) the base was loaded quantized (ptrain/model/quantization.py)."""

from __future__ import annotations

import copy
import sys

import torch

from ptrain.config import LoraSettings
from ptrain.errors import ConfigError, first_line

ALL_LINEAR = "all-linear"  # peft's word for every linear layer but the output layer

# Causal LMs adapt every attention and MLP projection, the QLoRA paper's practice (Dettmers et al. 2023: adapters on
# all linear layers match full fine-tuning, query and value alone do not); other families take peft's default.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CAUSAL_LM_TARGETS = {
    **dict.fromkeys(
        ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "granite"),
        PROJECTIONS,
    ),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),  # Phi-3 fuses q, k, v and gate, up
    "gpt2": ("c_attn", "c_proj", "c_fc"),  # c_proj: the attention's output and the MLP's down projection
}


def add_lora(model: torch.nn.Module, settings: LoraSettings, task_type: str):
    """`model` wrapped by peft's get_peft_model (in place: its target layers become LoRA layers). Base weights are
    frozen; the adapters and the task head (peft's modules_to_save: a trained copy beside the frozen original)
    train. Under FSDP the frozen weights are sharded like the rest (DeepSpeed ZeRO-3 is refused: engine.py). A
    quantized base (QLoRA) is first made trainable by peft's prepare_model_for_kbit_training (its norms in float32);
    gradient checkpointing stays train.gradient_checkpointing's choice."""
    import peft

    if settings.quantize is not None:
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets = target_modules(model, settings, task_type)
    config = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        modules_to_save=head_modules(model) or None,  # a causal LM: adapters alone
        task_type=task_type,
    )
    try:
        return peft.get_peft_model(model, config)
    except ValueError as err:  # e.g. a target that is no layer type LoRA adapts (a LayerNorm)
        raise ConfigError(f"model.lora.target_modules {targets}: {first_line(err)}") from None


def target_modules(model: torch.nn.Module, settings: LoraSettings, task_type: str) -> list[str] | str:
    """The modules to adapt: as configured (every name must match one); for a causal LM of a family in
    CAUSAL_LM_TARGETS, its attention and MLP projections; else peft's default for the model type
    (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING: BERT query and value, GPT-2 c_attn, Llama q_proj and
    v_proj, after the LoRA paper's choice of the attention's query and value projections)."""
    names = settings.target_modules
    if names == [ALL_LINEAR]:
        return ALL_LINEAR
    model_type = getattr(model.config, "model_type", None)
    if names is None and task_type == "CAUSAL_LM" and model_type in CAUSAL_LM_TARGETS:
        return list(CAUSAL_LM_TARGETS[model_type])
    if names is None:
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

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
    DistilBERT's pre_classifier and classifier, GPT-2's score), new weights that must train. A language model's
    output layer (a causal LM's lm_head, often tied to the input embeddings, vocabulary-sized) is pretrained and
    stays frozen: only the adapters train."""
    base, output = model.base_model, model.get_output_embeddings()
    return [
        name
        for name, child in model.named_children()
        if child is not base and child is not output and next(child.parameters(), None) is not None
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
    if getattr(base.config, "tie_word_embeddings", False):  # assign gave lm_head a tensor of its own: share it again,
        twin.get_base_model().tie_weights()  # or the merge unties them and the export stores the vocabulary twice
    buffers = dict(model.named_buffers())
    for name, buffer in list(twin.named_buffers()):
        if buffer.is_meta:
            owner, _, leaf = name.rpartition(".")
            twin.get_submodule(owner).register_buffer(leaf, buffers[name].detach().cpu().clone(), persistent=False)
    return twin
