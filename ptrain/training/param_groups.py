"""Optimizer parameter groups: learning rate per part of the model, weight decay on matrices only.

Without train.layer_lr_decay and train.head_learning_rate there are two groups (decay, no decay) at
train.learning_rate. With them, every parameter belongs to a part: `head` (outside the base model; at
head_learning_rate, else learning_rate), `top` (base-model parameters above the layers: pooler, final norm),
`layer_<i>` (encoder/decoder layer i, counted from the bottom) and `embeddings` (the base model's embedding
module, or its nn.Embedding children). The top layer and `top` take learning_rate, each layer below it one more
factor of layer_lr_decay, the embeddings one more than the lowest layer. Biases and LayerNorm weights (1-D
parameters) get no weight decay in every part; each group is named after its part for TensorBoard.
With model.lora the parts are read from the model inside peft's wrapper: the adapters belong to the layer they
adapt, the trained copy of the task head (peft's modules_to_save) to `head`; frozen parameters join no group.
"""

from __future__ import annotations

import torch

from ptrain.config import TrainConfig
from ptrain.errors import ConfigError
from ptrain.model.lora import plain_model


def parameter_groups(model: torch.nn.Module, train: TrainConfig) -> list[dict]:
    parts = model_parts(plain_model(model)) if train.layer_lr_decay or train.head_learning_rate else None
    groups: dict[tuple[str, bool], dict] = {}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        part, lr = ("all", train.learning_rate) if parts is None else part_and_lr(param, parts, train)
        decays = param.ndim >= 2
        group = groups.setdefault(
            (part, decays),
            {"params": [], "weight_decay": train.weight_decay if decays else 0.0, "lr": lr, "name": part},
        )
        group["params"].append(param)
    return sorted(groups.values(), key=lambda group: group["weight_decay"] == 0.0)  # decay groups first


def part_and_lr(param: torch.nn.Parameter, parts: dict, train: TrainConfig) -> tuple[str, float]:
    part, depth = parts.get(param, ("head", None))
    if depth is None:
        return part, train.head_learning_rate or train.learning_rate
    return part, train.learning_rate * (train.layer_lr_decay or 1.0) ** depth


def model_parts(model: torch.nn.Module) -> dict[torch.nn.Parameter, tuple[str, int]]:
    """Parameter -> (part, depth below the top layer) for the base model's parameters (by identity, so a tied
    weight has one part)."""
    base, layers = model.base_model, find_layers(model)
    parts = dict.fromkeys(base.parameters(), ("top", 0))
    embeddings = [getattr(base, "embeddings", None) or base.get_input_embeddings()]
    embeddings += [child for child in base.children() if isinstance(child, torch.nn.Embedding)]  # GPT-2's wpe
    for module in embeddings:
        parts.update(dict.fromkeys(module.parameters(), ("embeddings", len(layers))))
    for index, layer in enumerate(layers):
        parts.update(dict.fromkeys(layer.parameters(), (f"layer_{index}", len(layers) - 1 - index)))
    return parts


def find_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The base model's stack of num_hidden_layers blocks (encoder.layer, h, layers, transformer.layer...)."""
    count = getattr(model.config, "num_hidden_layers", None)
    for module in model.base_model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ConfigError(
        f"train.layer_lr_decay: no stack of {count} layers found in {type(model).__name__}; remove the key"
    )
