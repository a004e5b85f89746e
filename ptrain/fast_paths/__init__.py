"""The exact speed-ups ptrain applies to the model it trains (train.fast_paths, on by default): each computes
the same mathematics as the plain model, and tests/test_fast_paths.py holds each to the plain path's loss and
gradients. They patch modules whose weights are whole tensors: never under FSDP or DeepSpeed, whose parameters are
shards (DTensors, ZeRO partitions) or are gathered by hooks around the modules' own forward, nor under torch.compile
(train.compile), which traces the plain modules."""

from __future__ import annotations

import torch
from accelerate.utils import DistributedType, DynamoBackend

from ptrain.fast_paths.embedding_grad import reuse_embedding_gradient
from ptrain.fast_paths.fast_dropout import replace_dropout_modules, use_fast_attention
from ptrain.fast_paths.first_token import first_token_last_layer

SHARDING = (DistributedType.FSDP, DistributedType.DEEPSPEED)


def allowed(accelerator) -> bool:
    """Whether the fast paths may run under this Accelerator: one process or DDP, and no torch.compile."""
    compiled = accelerator.state.dynamo_plugin.backend != DynamoBackend.NO
    return accelerator.distributed_type not in SHARDING and not compiled


def apply_fast_paths(model: torch.nn.Module, device: torch.device) -> list[str]:
    """Patch `model` in place for training on `device`; returns the names of what was applied."""
    applied = []
    if first_token_last_layer(model):
        applied.append("[CLS]-only last layer")
    if device.type == "cpu":
        if replace_dropout_modules(model) + use_fast_attention(model):
            applied.append("SFC64 dropout masks")
        if reuse_embedding_gradient(model):
            applied.append("embedding gradient in reused memory")
    return applied
