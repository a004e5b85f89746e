"""The exact speed-ups (train.fast_paths, the folded gradient step) against the plain path: same loss and
gradients to float tolerance, and dropout masks from the same Bernoulli distribution."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from accelerate import Accelerator
from transformers import BertConfig, BertForSequenceClassification

from ptrain.fast_paths import apply_fast_paths, fast_dropout, gates, keep_masks, math_attention
from ptrain.fast_paths.first_token import first_token_last_layer, unsupported
from ptrain.fast_paths.packed_linears import packed_linears
from ptrain.runtime.engine import Engine
from ptrain.training.gradients import clip_gradients, folds_into_optimizer


def tiny_bert(dropout: float = 0.0) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(config).train()


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 120, (4, 9), generator=generator)
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[0, 6:], mask[2, 3:] = 0, 0  # padded rows
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 1])}


# The paths are on only with the library versions they were tested on (fast_paths/gates.py); with others (the
# dependency floors, `make test-floors`) they are off, and the tests that need them on are skipped, saying why.
UNTESTED = [reason for reason in map(gates.untested_version, gates.TESTED) if reason]
needs_tested_versions = pytest.mark.skipif(bool(UNTESTED), reason=f"fast paths off: {'; '.join(UNTESTED)}")


def active_paths(model) -> list[str]:
    """apply_fast_paths for one process training on the CPU; the names of the active paths."""
    return [state.name for state in apply_fast_paths(model, Accelerator(cpu=True), True) if state.active]


def loss_and_grads(model) -> tuple[float, dict[str, torch.Tensor]]:
    inputs = batch()
    labels = inputs.pop("labels")
    loss = torch.nn.functional.cross_entropy(model(**inputs).logits, labels)
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same(plain, fast) -> None:
    (plain_loss, plain_grads), (fast_loss, fast_grads) = plain, fast
    assert fast_loss == pytest.approx(plain_loss, abs=1e-6)
    assert plain_grads.keys() == fast_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


@needs_tested_versions
def test_fast_paths_give_the_plain_models_loss_and_gradients():
    plain = tiny_bert()
    fast = copy.deepcopy(plain)
    assert active_paths(fast) == ["[CLS]-only last layer", "SFC64 dropout masks", "oneDNN-packed evaluation Linears"]
    assert fast.config._attn_implementation == "ptrain_sdpa"
    assert_same(loss_and_grads(plain), loss_and_grads(fast))
    plain.eval(), fast.eval()
    inputs = {k: v for k, v in batch().items() if k != "labels"}
    torch.testing.assert_close(fast(**inputs).logits, plain(**inputs).logits, atol=1e-6, rtol=1e-5)
    assert fast.state_dict().keys() == plain.state_dict().keys()  # the export is the plain model


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_first_token_last_layer_is_exact_with_either_attention(attention):
    plain = tiny_bert()
    plain.set_attn_implementation(attention)
    fast = copy.deepcopy(plain)
    assert unsupported(fast) is None
    first_token_last_layer(fast)
    assert_same(loss_and_grads(plain), loss_and_grads(fast))
    assert unsupported(torch.nn.Linear(2, 2)) == "Linear reads more than the first position"  # left alone


def test_keep_masks_are_bernoulli_seeded_and_fresh_per_call():
    for p in (0.1, 0.5):
        mask = keep_masks.keep_mask((1000, 1000), p)
        assert abs(mask.float().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / 1e6)  # 5 sigma
    torch.manual_seed(3)
    first, second = keep_masks.keep_mask((7, 5), 0.3), keep_masks.keep_mask((7, 5), 0.3)
    torch.manual_seed(3)
    assert torch.equal(keep_masks.keep_mask((7, 5), 0.3), first)  # torch's seed (and saved RNG state) replays it
    assert not torch.equal(first, second)
    rows = keep_masks.keep_mask((200_000,), 0.1)
    assert abs(rows[:100_000].float().mean() - rows[100_000:].float().mean()) < 0.01  # odd halves of words too
    torch.manual_seed(3)
    factors = keep_masks.scaled_keep_mask((7, 5), 0.3)  # the same draws, as float32 factors 1 / (1 - p) or 0
    assert factors.dtype == torch.float32 and torch.equal(factors, torch.where(first, 1 / 0.7, 0.0))


def test_fast_dropout_scales_kept_elements_and_masks_the_gradient(monkeypatch):
    mask = torch.tensor([[True, False, True], [False, True, True]])
    monkeypatch.setattr(keep_masks, "keep_mask", lambda shape, p: mask)
    x = torch.randn(2, 3, requires_grad=True)
    y = fast_dropout.FastDropout(0.25).train()(x)
    torch.testing.assert_close(y, x * mask / 0.75)
    y.sum().backward()
    torch.testing.assert_close(x.grad, mask / 0.75)
    assert torch.equal(fast_dropout.FastDropout(0.25).eval()(x), x)


def test_training_attention_is_sdpa_math_with_the_same_mask(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 5, 8, generator=generator) for _ in range(3))
    pad = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    pad[1, ..., 3:] = False
    keep = torch.rand(2, 4, 5, 5, generator=generator) > 0.2
    monkeypatch.setattr(keep_masks, "keep_mask", lambda shape, p: keep)
    module = torch.nn.Module().train()
    module.is_causal = False
    out, _ = fast_dropout.attention(module, q, k, v, pad, dropout=0.2, scaling=0.3)
    scores = (q @ k.transpose(-2, -1) * 0.3).masked_fill(~pad, -math.inf)
    expected = (scores.softmax(-1) * keep / 0.8) @ v
    torch.testing.assert_close(out, expected.transpose(1, 2), atol=1e-5, rtol=1e-5)
    additive = torch.zeros(pad.shape).masked_fill(~pad, -math.inf)  # a float mask: added as it is
    out, _ = fast_dropout.attention(module, q, k, v, additive, dropout=0.2, scaling=0.3)
    torch.testing.assert_close(out, expected.transpose(1, 2), atol=1e-5, rtol=1e-5)
    plain, _ = fast_dropout.attention(module.eval(), q, k, v, pad, dropout=0.0, scaling=0.3)
    torch.testing.assert_close(plain, (scores.softmax(-1) @ v).transpose(1, 2), atol=1e-5, rtol=1e-5)


def reference_attention(q, k, v, additive, keep, p, scale):
    """SDPA's math kernel as composed torch operators (autograd's gradients): the plain path."""
    scores = (q.float() * math.sqrt(scale)) @ (k.float() * math.sqrt(scale)).transpose(-2, -1) + additive
    probs = torch._safe_softmax(scores, -1) * keep / (1 - p)
    return (probs @ v.float()).to(q.dtype).transpose(1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("q_len", [6, 1])  # 1: the [CLS]-only last layer's single query
def test_training_attention_gradients_are_autograds_of_the_math_kernel(monkeypatch, dtype, q_len):
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, q_len, 8, generator=generator).to(dtype)
    k, v = (torch.randn(3, 4, 6, 8, generator=generator).to(dtype) for _ in range(2))
    mask = torch.ones(3, 1, q_len, 6, dtype=torch.bool)
    mask[1, ..., 4:], mask[2, 0, 0, :] = False, False  # padded keys; a query row with every key masked
    keep = torch.rand(3, 4, q_len, 6, generator=generator) > 0.3
    monkeypatch.setattr(keep_masks, "keep_mask", lambda shape, p: keep)
    additive = torch.zeros(mask.shape).masked_fill(~mask, -math.inf).requires_grad_()
    grad = torch.randn(3, q_len, 4, 8, generator=generator).to(dtype)
    results = []
    for attend in (math_attention.math_attention, reference_attention):
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        inputs = (
            (*leaves, mask, 0.3, 0.25)
            if attend is math_attention.math_attention
            else (*leaves, additive, keep, 0.3, 0.25)
        )
        out = attend(*inputs)
        out.backward(grad)
        results.append([out, *(x.grad for x in leaves)])
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}
    for fast, plain in zip(*results):
        assert fast.dtype == plain.dtype and not fast.isnan().any()
        torch.testing.assert_close(fast, plain, **tolerance)  # bf16: one rounding apart at most
    assert torch.equal(results[0][0][2, 0].float(), torch.zeros(4, 8))  # every key masked: zeros, as SDPA
    bias_grads = []  # a float mask that is learned (a relative-position bias) gets its gradient
    for attend in (math_attention.math_attention, reference_attention):
        bias = torch.randn(3, 1, q_len, 6, generator=torch.Generator().manual_seed(2)).requires_grad_()
        extra = () if attend is math_attention.math_attention else (keep,)
        attend(q, k, v, bias, *extra, 0.3, 0.25).float().sum().backward()
        bias_grads.append(bias.grad)
    torch.testing.assert_close(*bias_grads, **tolerance)


def test_bf16_products_of_bf16_values_are_float32_products():
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(24, 40, 32, generator=generator).bfloat16().float() for _ in range(2))
    before = torch.backends.mkldnn.matmul.fp32_precision
    with math_attention.bf16_products(True):
        product = torch.bmm(a, b.transpose(1, 2))
    assert torch.backends.mkldnn.matmul.fp32_precision == before  # restored
    reference = torch.bmm(a.double(), b.double().transpose(1, 2))
    torch.testing.assert_close(product.double(), reference, atol=1e-5, rtol=1e-6)  # float32 sums, exact products


@pytest.mark.parametrize("max_grad_norm", [0.05, None])
def test_clipping_folded_into_the_fused_step_updates_as_the_plain_steps(max_grad_norm):
    accelerator = Accelerator(cpu=True)
    results = []
    for fold in (False, True):
        model = tiny_bert()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
        model, optimizer = accelerator.prepare(model, optimizer)
        assert folds_into_optimizer(accelerator, optimizer, Engine("single", 1))
        assert not folds_into_optimizer(accelerator, optimizer, Engine("fsdp2", 2))  # sharded gradients
        for _ in range(3):
            inputs = batch()
            labels = inputs.pop("labels")
            loss = torch.nn.functional.cross_entropy(model(**inputs).logits, labels, reduction="sum") / 4
            accelerator.backward(loss)
            norm = clip_gradients(model, optimizer, accelerator, max_grad_norm, fold)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        results.append((norm.item(), [p.detach().clone() for p in model.parameters()]))
    (plain_norm, plain_params), (norm, params) = results
    assert norm == pytest.approx(plain_norm, rel=1e-5)
    for plain_param, param in zip(plain_params, params):
        torch.testing.assert_close(param, plain_param, atol=1e-6, rtol=1e-5)


def plain_and_packed_logits(model, inputs: dict, dtype: torch.dtype):
    """The evaluation logits of `model` plain, inside packed_linears (with the modules it patched), and plain again
    after it, under `dtype` autocast on the CPU."""
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        plain = model(**inputs).logits.float()
        with packed_linears(model, torch.device("cpu")):
            packed = model(**inputs).logits.float()
            patched = [m for m in model.modules() if "forward" in vars(m)]
        after = model(**inputs).logits.float()
    return plain, packed, patched, after


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linears_compute_the_plain_evaluation(dtype):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch built without oneDNN")
    model = tiny_bert().eval()
    plain, packed, patched, after = plain_and_packed_logits(
        model, {k: v for k, v in batch().items() if k != "labels"}, dtype
    )
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2  # the fused GELU rounds once to bf16, not twice
    torch.testing.assert_close(packed, plain, atol=tolerance, rtol=tolerance)
    # per layer 5 Linears and the intermediate (its Linear packed once, inside the fused pair); pooler, head
    assert len(patched) == 2 * (5 + 1) + 2
    assert torch.equal(after, plain) and not any("forward" in vars(m) for m in model.modules())


def test_cpu_evaluation_attention_upcasts_bf16_to_float32():
    plain = tiny_bert().eval()
    fast = copy.deepcopy(plain)
    assert fast_dropout.use_fast_attention(fast)
    inputs = {k: v for k, v in batch().items() if k != "labels"}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, logits = plain(**inputs).logits.float(), fast(**inputs).logits.float()
    torch.testing.assert_close(logits, expected, atol=2e-2, rtol=2e-2)  # bf16's rounding, float32 attention
    q, k, v = (torch.randn(2, 4, 5, 8, dtype=torch.bfloat16) for _ in range(3))
    additive = torch.zeros(2, 1, 5, 5, dtype=torch.bfloat16)
    additive[1, ..., 3:] = -math.inf
    rng = torch.get_rng_state()
    out, _ = fast_dropout.attention(fast.bert.encoder.layer[0].attention.self, q, k, v, additive, scaling=0.3)
    reference = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), additive.float(), scale=0.3
    )
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference.transpose(1, 2).bfloat16().float())
    causal_module = torch.nn.Module().eval()
    causal_module.is_causal = True  # a decoder without a mask: the causal triangle
    out, _ = fast_dropout.attention(causal_module, q, k, v, None, scaling=0.3)
    reference = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), is_causal=True, scale=0.3
    )
    torch.testing.assert_close(out.float(), reference.transpose(1, 2).bfloat16().float())
    assert torch.equal(torch.get_rng_state(), rng)  # evaluation draws no dropout masks
