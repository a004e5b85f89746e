"""What ptrain sets in Accelerate's FSDP2 plugin before preparing the model, so that FSDP2 trains with the mathematics
of DDP and shards the model in units that fully_shard accepts.

Precision: float32 weights are gathered and gradients reduce-scattered in float32, and autocast casts per operation,
as under DDP. Accelerate's own policy for mixed precision gathers bf16 weights (LayerNorm weights, biases and
embeddings then compute from bf16-rounded values) and reduce-scatters bf16 gradients; gathering bf16 halves the
all-gather traffic, at that price.

Units: with TRANSFORMER_BASED_WRAP and no class list, Accelerate makes a unit of every module whose class the model
lists in `_no_split_modules`, then one of the input embedding. A model that lists the module holding its input
embedding (BERT lists BertEmbeddings) would get that embedding sharded twice, which fully_shard refuses (Accelerate
1.16); ptrain gives Accelerate the class list without those holders: the embedding is a unit of its own, as intended.
"""

from __future__ import annotations

import torch


def configure_fsdp(plugin, model: torch.nn.Module) -> None:
    """Set the FSDP2 plugin's precision policy and, when the accelerate config leaves it out, its class list."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    plugin.mixed_precision_policy = MixedPrecisionPolicy()  # parameters and gradients as they are: float32
    set_unit_classes(plugin, model)


def set_unit_classes(plugin, model: torch.nn.Module) -> None:
    """Fill the plugin's class list from the model when the accelerate config leaves it to Accelerate."""
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    if plugin.auto_wrap_policy is not transformer_auto_wrap_policy or plugin.transformer_cls_names_to_wrap:
        return
    present = {type(module).__name__ for module in model.modules()}
    listed = [name for name in getattr(model, "_no_split_modules", None) or [] if name in present]
    get_embedding = getattr(model, "get_input_embeddings", None)
    embedding = get_embedding() if get_embedding is not None else None
    holders = {
        type(module).__name__
        for module in model.modules()
        if module is not embedding and any(child is embedding for child in module.modules())
    }
    plugin.transformer_cls_names_to_wrap = [name for name in listed if name not in holders]
