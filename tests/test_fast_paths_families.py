"""Every fast path on every model family its allow-list claims, against the plain model: the same loss and
gradients with dropout off; with dropout on, the same masks as the plain model's dropout and the same draws when
gradient checkpointing recomputes a layer; packed evaluation to the plain one's precision. Families a path does not
claim fall back: the path reports itself off and leaves the model as it was. Tiny random models, no Hub."""

from __future__ import annotations

import copy
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, DynamoBackend
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)

from ptrain import fast_paths
from ptrain.fast_paths import PATHS, apply_fast_paths, fast_path_states, gates, keep_masks
from ptrain.model.loading import enable_gradient_checkpointing
from tests.test_fast_paths import needs_tested_versions, plain_and_packed_logits

pytestmark = needs_tested_versions

ENCODER = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
FAMILIES = {  # model_type -> (tiny config keys, dropout keys, model class)
    "bert": (ENCODER, ("hidden_dropout_prob", "attention_probs_dropout_prob"), AutoModelForSequenceClassification),
    "roberta": (ENCODER, ("hidden_dropout_prob", "attention_probs_dropout_prob"), AutoModelForSequenceClassification),
    "xlm-roberta": (
        ENCODER,
        ("hidden_dropout_prob", "attention_probs_dropout_prob"),
        AutoModelForSequenceClassification,
    ),
    "camembert": (
        ENCODER,
        ("hidden_dropout_prob", "attention_probs_dropout_prob"),
        AutoModelForSequenceClassification,
    ),
    "electra": (
        {**ENCODER, "embedding_size": 16},
        ("hidden_dropout_prob", "attention_probs_dropout_prob"),
        AutoModelForSequenceClassification,
    ),
    "distilbert": (
        dict(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=64),
        ("dropout", "attention_dropout", "seq_classif_dropout"),
        AutoModelForSequenceClassification,
    ),
    "gpt2": (
        dict(vocab_size=120, n_embd=32, n_layer=2, n_head=4, n_positions=32, pad_token_id=0),
        ("resid_pdrop", "embd_pdrop", "attn_pdrop"),
        AutoModelForCausalLM,
    ),
    "t5": (
        dict(vocab_size=120, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0),
        ("dropout_rate",),
        AutoModelForSeq2SeqLM,
    ),
    "albert": (  # a family no path claims
        {**ENCODER, "embedding_size": 16},
        ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"),
        AutoModelForSequenceClassification,
    ),
}
CLAIMED = {path.name: sorted(path.families) for path in PATHS}


def fake_accelerator(kind=DistributedType.NO, backend=DynamoBackend.NO, device="cpu"):
    state = SimpleNamespace(
        dynamo_plugin=SimpleNamespace(backend=backend),
        fsdp_plugin=SimpleNamespace(reshard_after_forward=True),
        deepspeed_plugin=SimpleNamespace(zero_stage=2),
    )
    return SimpleNamespace(distributed_type=kind, num_processes=2, state=state, device=torch.device(device))


CPU = fake_accelerator()  # one process on the CPU


def claims(path_name: str) -> list[str]:
    return CLAIMED[path_name]


def tiny(family: str, dropout: float = 0.0, attention: str = "sdpa") -> torch.nn.Module:
    sizes, dropout_keys, model_class = FAMILIES[family]
    config = AutoConfig.for_model(family, num_labels=3, **sizes, **dict.fromkeys(dropout_keys, dropout))
    config._attn_implementation = attention
    torch.manual_seed(0)
    return model_class.from_config(config).train()


def batch(family: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 120, (4, 9), generator=generator)
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[0, 6:], mask[2, 3:] = 0, 0  # padded rows
    if family == "gpt2":
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}
    if family == "t5":
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(5, 120, (4, 5), generator=generator)}
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 1])}


def loss_and_grads(model, family: str, seed: int = 5) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)  # dropout draws
    model.zero_grad(set_to_none=True)
    loss = model(**batch(family)).loss
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same(plain, fast, atol: float = 1e-6) -> None:
    (plain_loss, plain_grads), (fast_loss, fast_grads) = plain, fast
    assert fast_loss == pytest.approx(plain_loss, abs=atol)
    assert plain_grads.keys() == fast_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, atol=atol, rtol=1e-5, msg=name)


def active(model) -> list[str]:
    return [state.name for state in fast_path_states(model, CPU, True) if state.active]


def untouched(model, plain) -> bool:
    """No instance-level forward, no replaced module, the attention as it was."""
    patched = [name for name, module in model.named_modules() if "forward" in vars(module)]
    types_now = [type(module) for module in model.modules()]
    same_attention = model.config._attn_implementation == plain.config._attn_implementation
    return not patched and types_now == [type(module) for module in plain.modules()] and same_attention


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_path_is_active_exactly_on_the_families_it_claims_and_leaves_others_untouched(family):
    plain = tiny(family)
    for path in PATHS:
        model = copy.deepcopy(plain)
        (state,) = [s for s in apply_fast_paths(model, CPU, True) if s.name == path.name]
        claimed = family in path.families and path.unsupported(plain) is None
        assert state.active == claimed, (path.name, state.off_reason)
        if family not in path.families:
            assert state.off_reason.startswith(f"model family {family} not among those tested")
    model = copy.deepcopy(plain)
    states = apply_fast_paths(model, CPU, True)
    if not any(state.active for state in states):
        assert untouched(model, plain)
        assert not any(m in fast_paths._PACKED for m in model.modules())


def test_first_token_layer_falls_back_for_heads_reading_other_positions():
    for family in ("distilbert", "gpt2", "t5"):  # DistilBERT's head reads [CLS] but its layer has another shape
        model = tiny(family)
        (state,) = [s for s in apply_fast_paths(model, CPU, True) if s.name == "[CLS]-only last layer"]
        assert not state.active and "not among those tested" in state.off_reason
        assert not [name for name, module in model.named_modules() if "forward" in vars(module)]
    bert = tiny("bert")
    bert.config._attn_implementation = "flash_attention_2"  # its masks take another layout: untested
    reasons = {s.name: s.off_reason for s in fast_path_states(bert, CPU, True)}
    assert reasons["[CLS]-only last layer"].startswith("attention flash_attention_2 not among those tested")


@pytest.mark.slow
@pytest.mark.parametrize("family", claims("SFC64 dropout masks"))
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_dropout_off_every_active_path_gives_the_plain_loss_and_gradients(family, attention):
    plain = tiny(family, attention=attention)
    fast = copy.deepcopy(plain)
    states = apply_fast_paths(fast, CPU, True)
    assert "SFC64 dropout masks" in [s.name for s in states if s.active]
    assert_same(loss_and_grads(plain, family), loss_and_grads(fast, family))
    assert fast.state_dict().keys() == plain.state_dict().keys()  # the export is the plain model


def recorded_masks(calls: list):
    original = keep_masks.keep_mask

    def keep_mask(shape, p):
        mask = original(shape, p)
        calls.append(mask)
        return mask

    return keep_mask


def replayed_dropout(masks: list):
    """F.dropout that applies, in order, the masks the fast model drew."""

    def dropout(x, p=0.5, training=True, inplace=False):
        if not training or p == 0.0:
            return x
        mask = masks.pop(0)
        assert mask.shape == x.shape
        return x * mask / (1 - p)

    return dropout


# T5 passes its position bias to the attention function, which leaves it to SDPA (and SDPA's own dropout draws)
@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in claims("SFC64 dropout masks") if f != "t5"])
def test_dropout_on_the_fast_masks_give_the_plain_models_loss_and_gradients(family, monkeypatch):
    """The plain model (eager attention, its dropouts through F.dropout) fed the masks the fast model drew: the
    dropout and its attention compute what the plain model computes with those masks."""
    plain = tiny(family, dropout=0.2, attention="eager")
    fast = tiny(family, dropout=0.2, attention="sdpa")
    (path,) = [path for path in PATHS if path.name == "SFC64 dropout masks"]
    path.apply(fast)  # this path alone: the [CLS]-only layer draws row 0's masks only
    masks: list[torch.Tensor] = []
    monkeypatch.setattr(keep_masks, "keep_mask", recorded_masks(masks))
    fast_result = loss_and_grads(fast, family)
    attention_masks = [mask for mask in masks if mask.dim() == 4]
    assert len(attention_masks) == 2 and len(masks) > 2  # one per layer's attention; the modules' too
    replay = list(masks)
    monkeypatch.setattr(torch.nn.functional, "dropout", replayed_dropout(replay))
    assert_same(loss_and_grads(plain, family), fast_result, atol=1e-5)
    assert not replay  # the plain model drew as many masks, of the same shapes, in the same order


@pytest.mark.slow
@pytest.mark.parametrize("family", claims("SFC64 dropout masks"))
def test_dropout_on_gradient_checkpointing_recomputes_the_same_draws(family):
    fast = tiny(family, dropout=0.2)
    assert "SFC64 dropout masks" in [s.name for s in apply_fast_paths(fast, CPU, True) if s.active]
    checkpointed = copy.deepcopy(fast)
    enable_gradient_checkpointing(checkpointed)
    kept, recomputed = loss_and_grads(fast, family), loss_and_grads(checkpointed, family)
    assert_same(kept, recomputed)
    assert loss_and_grads(fast, family, seed=6)[0] != kept[0]  # the draws change with the seed: dropout is on


@pytest.mark.slow
@pytest.mark.parametrize("family", claims("oneDNN-packed evaluation Linears"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_evaluation_computes_the_plain_evaluation(family, dtype):
    inputs = {k: v for k, v in batch(family).items() if k != "labels" or family == "t5"}
    model = tiny(family).eval()
    plain, packed, patched, after = plain_and_packed_logits(model, inputs, dtype)
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2  # the fused GELU rounds once to bf16, not twice
    torch.testing.assert_close(packed, plain, atol=tolerance, rtol=tolerance)
    assert patched and torch.equal(after, plain) and not any("forward" in vars(m) for m in model.modules())


def test_packed_evaluation_runs_only_where_the_path_is_active():
    model = tiny("bert").eval()
    assert isinstance(fast_paths.packed_evaluation(model, torch.device("cpu")), nullcontext)
    apply_fast_paths(model, CPU, False)  # the switch off: no packing
    assert isinstance(fast_paths.packed_evaluation(model, torch.device("cpu")), nullcontext)
    apply_fast_paths(model, CPU, True)
    wrapper = torch.nn.Sequential(model)  # as DDP or LoRA wrap it
    assert not isinstance(fast_paths.packed_evaluation(wrapper, torch.device("cpu")), nullcontext)


def test_the_switch_engine_device_and_library_gates_turn_paths_off_with_the_reason(monkeypatch):
    model = tiny("bert")
    off = {
        "train.fast_paths=false": fast_path_states(model, Accelerator(cpu=True), False),
        "fsdp2": fast_path_states(model, fake_accelerator(DistributedType.FSDP), True),
        "deepspeed": fast_path_states(model, fake_accelerator(DistributedType.DEEPSPEED), True),
        "torch.compile": fast_path_states(model, fake_accelerator(backend=DynamoBackend.INDUCTOR), True),
    }
    for reason, states in off.items():
        assert [s.off_reason for s in states] == [reason] * len(PATHS)
        assert fast_paths.describe(states) == f"fast paths: off ({reason})"
    on_gpu = {s.name: s.off_reason for s in fast_path_states(model, fake_accelerator(device="cuda"), True)}
    assert on_gpu == {
        "[CLS]-only last layer": None,  # exact on any device
        "SFC64 dropout masks": "not on cuda",
        "oneDNN-packed evaluation Linears": "not on cuda",
    }
    ddp = fast_path_states(model, fake_accelerator(DistributedType.MULTI_CPU), True)
    assert all(state.active for state in ddp)
    assert fast_paths.describe(ddp) == "fast paths: " + ", ".join(path.name for path in PATHS)
    monkeypatch.setitem(gates.TESTED, "transformers", ("4.0", "5.0"))
    reasons = {s.name: s.off_reason for s in apply_fast_paths(model, CPU, True)}
    assert (
        reasons["[CLS]-only last layer"].startswith("transformers 5.")
        and "outside the tested range" in reasons["[CLS]-only last layer"]
    )
    assert reasons["oneDNN-packed evaluation Linears"] is None  # torch internals only
    assert not [name for name, module in model.named_modules() if "forward" in vars(module)]
    assert fast_paths.as_record(fast_path_states(model, CPU, False)) == {
        path.name: "off: train.fast_paths=false" for path in PATHS
    }
