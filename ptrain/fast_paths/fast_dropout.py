"""Dropout on the CPU with its masks drawn by a faster seeded generator (keep_masks.py): the same Bernoulli
distribution, replayed by torch's seed and a checkpoint's RNG state.

Kept elements are scaled by 1 / (1 - p), in one kernel (aten's native_dropout_backward, x * mask * scale, whose
derivative is the same masked scaling): the forward and backward mathematics of nn.Dropout. Attention-probability
dropout goes through the "ptrain_sdpa" attention function registered here (math_attention.py when training on
the CPU). Off the CPU, or in eval mode, everything is torch's own. That function also runs evaluation under
bf16 in float32 (float32_attention, or math_attention with p = 0): within the same path.

Private internals: aten's native_dropout_backward as dropout's forward, transformers' attention and mask
registries ("ptrain_sdpa" set on the model's config) and sdpa_attention_forward, and math_attention.py's. Gates
(gates.py): CPU only; the families in FAMILIES; torch and transformers in gates.TESTED.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from ptrain.fast_paths import keep_masks
from ptrain.fast_paths.math_attention import causal_mask, math_attention


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout(x, p, training), with keep_mask's generator on the CPU."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return nn.functional.dropout(x, p, training)
    if p == 1.0:
        return x * 0.0
    return torch.ops.aten.native_dropout_backward(x, keep_masks.keep_mask(x.shape, p), 1.0 / (1.0 - p))


class FastDropout(nn.Dropout):
    """nn.Dropout (same `p`, same place in the module tree) whose CPU masks come from keep_mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


FAMILIES = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "gpt2", "t5"})


def unsupported(model: nn.Module) -> str | None:
    """Why the path has nothing to replace in `model` (no plain nn.Dropout, attention other than "sdpa"), or None."""
    dropouts = any(type(module) is nn.Dropout and not module.inplace for module in model.modules())
    if not dropouts and getattr(model.config, "_attn_implementation", None) != "sdpa":
        return "no nn.Dropout modules and attention not sdpa"
    return None


def use_fast_dropout(model: nn.Module) -> None:
    """The path: FastDropout for every plain nn.Dropout, and "ptrain_sdpa" attention for a model on "sdpa"."""
    replace_dropout_modules(model)
    use_fast_attention(model)


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
    """transformers' "sdpa" attention, except on the CPU when training with attention-probability dropout (the
    computation of SDPA's math kernel, which that case runs, with keep_mask's generator) and when evaluating under
    bf16 (the same in float32, without dropout): both in math_attention.py. Registered as "ptrain_sdpa"."""
    on_cpu = query.device.type == "cpu"
    train_dropout = module.training and dropout > 0 and on_cpu
    bf16_eval = not module.training and on_cpu and query.dtype == torch.bfloat16
    own_kernel = not any(kwargs.get(name) is not None for name in ("position_bias", "cache", "softcap"))
    if own_kernel and getattr(module, "num_key_value_groups", 1) == 1 and (train_dropout or bf16_eval):
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        if query.shape[2] > 1 and attention_mask is None and causal:
            attention_mask = causal_mask(query.shape[2], key.shape[2], query.device)
        return math_attention(query, key, value, attention_mask, dropout if train_dropout else 0.0, scaling), None
    if bf16_eval and kwargs.get("position_bias") is None:  # T5's bias joins the mask in the inputs' dtype
        return float32_attention(module, query, key, value, attention_mask, scaling, is_causal, **kwargs)
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
    )


def float32_attention(module, query, key, value, attention_mask, scaling, is_causal, **kwargs):
    """Evaluation on the CPU under bf16 autocast where math_attention does not apply (grouped key/value heads, a
    paged cache): SDPA on q, k and v upcast to float32, the output cast back. torch's CPU flash kernel runs its
    bf16 case 10-28% slower than its float32 one for the short sequences (up to ~36 tokens) of sentence tasks,
    and as fast beyond; float32 inputs only add precision."""
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()  # an additive mask takes the inputs' dtype
    with torch.autocast("cpu", enabled=False):
        q, k, v = query.float(), key.float(), value.float()
        output, weights = sdpa_attention_forward(
            module, q, k, v, attention_mask, scaling=scaling, is_causal=is_causal, **kwargs
        )
    return output.to(query.dtype), weights


AttentionInterface.register("ptrain_sdpa", attention)
AttentionMaskInterface.register("ptrain_sdpa", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])  # sdpa's masks, exactly


def use_fast_attention(model: nn.Module) -> bool:
    """Switch a model on "sdpa" attention to "ptrain_sdpa" (the same on every device but a training CPU)."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation("ptrain_sdpa")
    return True
