"""Dropout on the CPU with its masks drawn by a faster seeded generator: the same Bernoulli distribution.

PyTorch's CPU `bernoulli_` (behind nn.Dropout and SDPA's dropout) draws one double per element from a Mersenne
Twister, serially (MKL's vectorised path is used on Intel CPUs only; pytorch#138199); on the emotion job it was
a fifth of a training step on a 2-core AMD EPYC. Here each element keeps with probability 1 - p, decided by 32
random bits from numpy's PCG64DXSM, which fills 64 bits in about 2 ns: P(keep) is exact to 2**-32, finer than
CUDA's float32 draw. The generator's state comes from two draws of torch's own generator per call, so
`torch.manual_seed` seeds it and a checkpoint's saved torch RNG state replays it bitwise on resume.

Kept elements are scaled by 1 / (1 - p), in one kernel (aten's native_dropout_backward, x * mask * scale, whose
derivative is the same masked scaling): the forward and backward mathematics of nn.Dropout. Off the CPU, or in
eval mode, everything is torch's own.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

_BITS = np.random.Generator(np.random.PCG64DXSM()).bit_generator


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """A bool mask of `shape`, each element True with probability 1 - p, independently."""
    numel = math.prod(shape)
    state, increment = torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64).tolist()
    _BITS.state = {
        "bit_generator": "PCG64DXSM",
        "state": {"state": state % 2**128, "inc": (increment % 2**128) | 1},
        "has_uint32": 0,
        "uinteger": 0,
    }
    words = torch.from_numpy(_BITS.random_raw((numel + 1) // 2).view(np.int32)[:numel])
    threshold = round(p * 2**32) - 2**31  # int32 words >= threshold: a share 1 - p of all 2**32 values
    return (words >= threshold).view(shape)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout(x, p, training), with keep_mask's generator on the CPU."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return nn.functional.dropout(x, p, training)
    if p == 1.0:
        return x * 0.0
    return torch.ops.aten.native_dropout_backward(x, keep_mask(x.shape, p), 1.0 / (1.0 - p))


class FastDropout(nn.Dropout):
    """nn.Dropout (same `p`, same place in the module tree) whose CPU masks come from keep_mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def replace_dropout_modules(model: nn.Module) -> int:
    """Swap every plain nn.Dropout in `model` for a FastDropout; returns how many were swapped."""
    swapped = 0
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is nn.Dropout and not child.inplace:
                setattr(module, name, FastDropout(child.p).train(child.training))
                swapped += 1
    return swapped


def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' "sdpa" attention, except when training on the CPU with attention-probability dropout: then
    the computation of SDPA's math kernel (which that case runs: q, k, v upcast to float32, each of q and k scaled
    by sqrt(scale), safe softmax, dropout, @ v) with keep_mask's generator. Registered as "ptrain_sdpa"."""
    plain = not (module.training and dropout > 0 and query.device.type == "cpu")
    cpu_bf16_eval = not module.training and query.device.type == "cpu" and query.dtype == torch.bfloat16
    if cpu_bf16_eval and kwargs.get("position_bias") is None:  # T5's bias joins the mask in the inputs' dtype
        return float32_attention(module, query, key, value, attention_mask, scaling, is_causal, **kwargs)
    if plain or getattr(module, "num_key_value_groups", 1) > 1 or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if query.shape[2] > 1 and attention_mask is None and causal:
        attention_mask = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool, device=query.device).tril()
    output = math_attention(query, key, value, attention_mask, dropout, scaling)
    return output.transpose(1, 2).contiguous(), None


def float32_attention(module, query, key, value, attention_mask, scaling, is_causal, **kwargs):
    """Evaluation on the CPU under bf16 autocast: SDPA on q, k and v upcast to float32, the output cast back.
    torch's CPU flash kernel runs its bf16 case 10-28% slower than its float32 one for the short sequences
    (up to ~36 tokens) of sentence tasks, and as fast beyond; float32 inputs only add precision."""
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()  # an additive mask takes the inputs' dtype
    with torch.autocast("cpu", enabled=False):
        q, k, v = query.float(), key.float(), value.float()
        output, weights = sdpa_attention_forward(
            module, q, k, v, attention_mask, scaling=scaling, is_causal=is_causal, **kwargs
        )
    return output.to(query.dtype), weights


def math_attention(query, key, value, mask, p: float, scaling: float | None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) with dropout, @ v, in float32; the result in query's dtype."""
    root_scale = math.sqrt(scaling if scaling is not None else 1.0 / math.sqrt(query.shape[-1]))
    with torch.autocast(query.device.type, enabled=False):
        q, k, v = query.float(), key.float(), value.float()
        scores = torch.matmul(q * root_scale, (k * root_scale).transpose(-2, -1))
        if mask is not None and mask.dtype == torch.bool:  # made additive first: a tenth of masked_fill's time
            mask = torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, -math.inf)
        if mask is not None:
            scores = scores + mask
        probs = dropout(torch._safe_softmax(scores, -1), p)  # rows with every key masked: zeros, as SDPA
        return torch.matmul(probs, v).to(query.dtype)


AttentionInterface.register("ptrain_sdpa", attention)
AttentionMaskInterface.register("ptrain_sdpa", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])  # sdpa's masks, exactly


def use_fast_attention(model: nn.Module) -> bool:
    """Switch a model on "sdpa" attention to "ptrain_sdpa" (the same on every device but a training CPU)."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation("ptrain_sdpa")
    return True
