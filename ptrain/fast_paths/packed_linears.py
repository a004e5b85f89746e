"""Evaluation's Linear layers through oneDNN with their weights cast and packed once per pass, GELU fused.

Under CPU autocast each nn.Linear is an addmm whose oneDNN call re-lays-out the weight on every batch, and the
feed-forward's exact GELU is a separate pass over the largest activation. Inside `packed_linears`, every
nn.Linear of the model computes through `torch.ops.mkldnn._linear_pointwise` with its weight cast to the pass's
dtype (bf16 under autocast, else fp32) and reordered once into oneDNN's blocked layout, and a Linear followed by
an exact GELU (BERT's intermediate layer) applies the GELU inside the same kernel. The products, sums and
accumulation are the same (bf16 inputs, fp32 accumulation); the fused GELU is applied before the output is
rounded to bf16 instead of after, so outputs differ by at most that rounding (tests/test_fast_paths.py).
Leaving the context restores the plain modules; training never runs through here.

Private torch internals: torch.ops.mkldnn._linear_pointwise and _reorder_linear_weight, set as instance-level
`forward`s for the pass. Gates (gates.py): CPU with oneDNN; the families in FAMILIES; torch in gates.TESTED; an
evaluation pass packs a model only when apply_fast_paths made this path active for it (fast_paths.packed_evaluation).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from transformers.activations import GELUActivation

from ptrain.runtime.precision import cpu_native_bf16

_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


FAMILIES = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "gpt2", "t5"})


def unsupported(model: nn.Module) -> str | None:
    """Why evaluation of `model` has nothing to pack (no nn.Linear) or oneDNN is missing, or None."""
    if _LINEAR is None or not torch.backends.mkldnn.is_available():
        return "torch built without oneDNN"
    if not any(type(module) is nn.Linear for module in model.modules()):
        return "no nn.Linear modules"
    return None


def _pass_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype the pass's Linear layers compute in, or None where oneDNN packing does not apply."""
    if device.type != "cpu" or _LINEAR is None or not torch.backends.mkldnn.is_available():
        return None
    if not torch.is_autocast_enabled("cpu"):
        return torch.float32
    dtype = torch.get_autocast_dtype("cpu")
    return dtype if dtype == torch.bfloat16 and cpu_native_bf16() else None


class _LastInput:
    """The last input cast for a packed Linear: the query, key and value projections read the same tensor, so
    it is cast to the pass's dtype once, not three times (unless it was changed in place in between)."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype, self.source, self.version, self.cast = dtype, None, -1, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x is not self.source or x._version != self.version:
            self.source, self.version, self.cast = x, x._version, x.to(self.dtype).contiguous()
        return self.cast


def _packed_forward(linear: nn.Linear, inputs: _LastInput, activation: str = "none"):
    weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().to(inputs.dtype), None)
    bias = None if linear.bias is None else linear.bias.detach().to(inputs.dtype)
    algorithm = "none" if activation == "gelu" else ""  # GELU's: the exact (erf) form

    def forward(x: torch.Tensor) -> torch.Tensor:
        return _LINEAR(inputs(x), weight, bias, activation, [], algorithm)

    return forward


def _fusable(module: nn.Module) -> bool:
    """A module that is a Linear (`dense`) followed by an exact GELU (`intermediate_act_fn`): BERT's intermediate."""
    act = getattr(module, "intermediate_act_fn", None)
    exact_gelu = type(act) is GELUActivation and act.act is nn.functional.gelu
    return exact_gelu and type(getattr(module, "dense", None)) is nn.Linear


@contextmanager
def packed_linears(model: nn.Module, device: torch.device):
    """Inside: the model's Linear layers (and Linear + exact GELU pairs, fused) run packed; see the module doc.
    A no-op off the CPU, with gradients enabled, or under an autocast other than bf16 on a CPU with native bf16."""
    dtype = _pass_dtype(device)
    if dtype is None or torch.is_grad_enabled():
        yield
        return
    inputs, patched = _LastInput(dtype), []
    fused = {id(module.dense) for module in model.modules() if _fusable(module)}  # packed inside their pair
    try:
        for module in model.modules():
            if "forward" in vars(module):  # already patched on the instance: left as it is
                continue
            if type(module) is nn.Linear and id(module) not in fused:
                module.forward = _packed_forward(module, inputs)
            elif _fusable(module):
                module.forward = _packed_forward(module.dense, inputs, "gelu")
            else:
                continue
            patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward
