"""Attention on the CPU in float32 as SDPA's math kernel computes it, in one autograd Function: for training
with attention-probability dropout, and (p = 0, no draws) for evaluation under bf16.

With dropout, SDPA on the CPU runs its math kernel: q, k and v upcast to float32, scores, mask, safe softmax,
dropout, @ v. Composed of torch operators, that is ~15 autograd nodes per layer, most of them full passes over
the batch x heads x length x length scores (the scale applied to q and to k, the mask's conversion, the safe
softmax's four passes, the dropout's three, layout copies before and after each matmul). Here the forward and
backward are written out once, with the same operations in float32:

- the scale rides on the q k^T matmul (`baddbmm`'s alpha) instead of two passes over q and k;
- the padding mask is made additive once per forward (every layer gets the same mask object), and the plain
  softmax replaces the safe one when no query row has all its keys masked (the only rows where they differ);
- the dropout is one multiply by float32 factors (keep_masks.scaled_keep_mask: the same masks, the same draws);
- q, k and v are cast and laid out heads-first in one copy each, the output and the gradients cast back in one;
- q k^T and the output gradient's g v^T, whose operands hold bf16 values, run through oneDNN (bf16_products).

Same mathematics as SDPA's math kernel; the results differ by float32 rounding (the scale's place, the order
of sums). In evaluation it replaces SDPA's float32 flash kernel (float32_attention), to the same precision.

Private torch internals: torch._safe_softmax, torch._softmax_backward_data, the oneDNN matmul precision setting
(torch.backends.mkldnn.matmul.fp32_precision, from torch 2.9) and a module-level cache of the last mask keyed on
the tensor's identity and version. Part of fast_dropout.py's path, under its gates.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch

from ptrain.fast_paths import keep_masks

_last_mask: list = []  # [(mask, its version, additive float32 mask, every query row has a key)]


def math_attention(query, key, value, mask, p: float, scaling: float | None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) with dropout p, @ v, in float32. q, k, v: [batch, heads, length, size];
    returns [batch, query length, heads, size], contiguous, in query's dtype."""
    scale = scaling if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
    additive, every_row_has_a_key = additive_mask(mask)
    with torch.autocast(query.device.type, enabled=False):
        return MathAttention.apply(query, key, value, additive, scale, p, not every_row_has_a_key)


@functools.lru_cache(maxsize=8)
def causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """The causal triangle for a decoder called without a mask: one tensor per shape, so every layer of a forward
    (and every forward of that length) gets the same object and additive_mask converts it once."""
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril()


def additive_mask(mask: torch.Tensor | None) -> tuple[torch.Tensor | None, bool]:
    """(mask as float32 to add to the scores, True when no query row has every key masked). A bool mask keeps
    where True. Remembered for the last mask seen, so each layer of one forward reuses the first's work."""
    if mask is None:
        return None, True
    if _last_mask and _last_mask[0][0] is mask and _last_mask[0][1] == mask._version:
        return _last_mask[0][2], _last_mask[0][3]
    if mask.dtype == torch.bool:
        additive = torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, -math.inf)
        every_row = bool(mask.any(-1).all())
    else:
        additive = mask.float()
        every_row = bool((additive > -math.inf).any(-1).all())
    if not mask.requires_grad:
        _last_mask[:] = [(mask, mask._version, additive, every_row)]
    return additive, every_row


class MathAttention(torch.autograd.Function):
    """Forward and backward of float32 attention with dropout; the saved tensors are those autograd would keep."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, query, key, value, mask, scale: float, p: float, safe_softmax: bool):
        batch, heads, q_len, _ = query.shape
        q, k, v = heads_first(query), heads_first(key), heads_first(value)
        with bf16_products(query.dtype == key.dtype == torch.bfloat16):
            scores = torch.baddbmm(q.new_zeros(()), q, k.transpose(1, 2), beta=0.0, alpha=scale)
        if mask is not None:
            scores.view(batch, heads, q_len, -1).add_(mask)
        probs = torch._safe_softmax(scores, -1) if safe_softmax else torch.softmax(scores, -1)
        keep = keep_masks.scaled_keep_mask((batch, heads, q_len, k.shape[1]), p).view(probs.shape) if p else None
        dropped = probs * keep if p else probs  # p == 0 (evaluation): no draws from torch's generator
        ctx.save_for_backward(q, k, v, probs, keep, dropped)
        ctx.scale, ctx.dtypes, ctx.mask_shape = (
            scale,
            (query.dtype, key.dtype, value.dtype),
            getattr(mask, "shape", None),
        )
        return dense(torch.bmm(dropped, v).view(query.shape).transpose(1, 2), query.dtype)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")  # the forward's autocast state: off (math_attention turns it off)
    def backward(ctx, grad):  # grad: [batch, query length, heads, size]
        q, k, v, probs, keep, dropped = ctx.saved_tensors
        batch, q_len, heads, size = grad.shape
        g = dense(grad.transpose(1, 2), torch.float32).view(-1, q_len, size)
        dvalue = torch.bmm(dropped.transpose(1, 2), g)
        with bf16_products(grad.dtype == ctx.dtypes[2] == torch.bfloat16):
            dprobs = torch.bmm(g, v.transpose(1, 2))
        if keep is not None:
            dprobs.mul_(keep)
        dscores = torch._softmax_backward_data(dprobs, probs, -1, torch.float32)
        dquery = torch.baddbmm(q.new_zeros(()), dscores, k, beta=0.0, alpha=ctx.scale)
        dkey = torch.baddbmm(q.new_zeros(()), dscores.transpose(1, 2), q, beta=0.0, alpha=ctx.scale)
        dmask = None
        if ctx.needs_input_grad[3]:
            dmask = dscores.view(batch, heads, q_len, -1).sum_to_size(ctx.mask_shape)
        grads = (like_input(g_, batch, heads, dtype) for g_, dtype in zip((dquery, dkey, dvalue), ctx.dtypes))
        return (*grads, dmask, None, None, None)


@contextlib.contextmanager
def bf16_products(exact: bool):
    """While `exact` (both float32 operands hold bf16 values): let oneDNN multiply them as bf16 (torch's "bf16"
    float32 matmul precision), with float32 accumulation and output. Rounding a bf16 value to bf16 changes nothing
    and a product of two bf16 values is exact in float32, so the result is the float32 matmul's up to the order
    of the sums; measured 2.0 vs 0.8 ms for q k^T at 384 x 87 x 32 (MKL's float32 batched kernel vs oneDNN's)."""
    setting = torch.backends.mkldnn.matmul
    before = setting.fp32_precision
    if exact:
        setting.fp32_precision = "bf16"
    try:
        yield
    finally:
        setting.fp32_precision = before


def dense(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x in `dtype`, contiguous in x's shape: one copy (`.to(dtype).contiguous()` may make two, and `.to` with a
    memory format returns a strided x unchanged when its dtype is already `dtype`)."""
    return torch.empty(x.shape, dtype=dtype, device=x.device).copy_(x)


def heads_first(x: torch.Tensor) -> torch.Tensor:
    """[batch, heads, length, size] (any strides, any float dtype) -> float32 [batch x heads, length, size]."""
    batch, heads, length, size = x.shape
    return dense(x, torch.float32).view(batch * heads, length, size)


def like_input(grad: torch.Tensor, batch: int, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """A float32 [batch x heads, length, size] gradient as [batch, heads, length, size] in `dtype`, laid out
    [batch, length, heads, size] in memory as the projections' outputs are: their views' backward copies nothing."""
    _, length, size = grad.shape
    heads_view = grad.view(batch, heads, length, size).transpose(1, 2)
    return dense(heads_view, dtype).transpose(1, 2)
