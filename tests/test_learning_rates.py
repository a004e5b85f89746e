"""A learning rate per part of the model (train.layer_lr_decay, train.head_learning_rate), read back from
TensorBoard through the real CLI."""

from __future__ import annotations

import pytest
from transformers import BertConfig, BertForSequenceClassification

from ptrain.config import TrainConfig
from ptrain.training.param_groups import parameter_groups
from tests.conftest import scalar_values, train_tiny


@pytest.mark.slow
def test_layer_lr_decay_on_the_two_layer_tiny_model_logs_each_parts_rate(tmp_path, cache_dir):
    extra = {
        "train.layer_lr_decay": "0.8",
        "train.head_learning_rate": "0.002",
        "train.max_steps": "6",
        "train.log_every_steps": "1",
        "train.eval_every_steps": "6",
    }
    run_dir = train_tiny(tmp_path, cache_dir, **extra)

    def values(tag: str) -> list[float]:
        return scalar_values(run_dir, f"train/{tag}")

    base = values("learning_rate")  # train.learning_rate (1e-3) along the warmup/decay schedule
    expected = {"layer_1": 1.0, "top": 1.0, "layer_0": 0.8, "embeddings": 0.64}
    for part, factor in expected.items():
        assert values(f"learning_rate/{part}") == pytest.approx([lr * factor for lr in base], rel=1e-5), part
    assert values("learning_rate/head") == pytest.approx([lr * 2 for lr in base], rel=1e-5)
    assert max(base) == pytest.approx(1e-3, rel=1e-5)


def test_every_part_keeps_weight_decay_off_biases_and_layernorm():
    model = BertForSequenceClassification(
        BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=50)
    )
    groups = parameter_groups(model, TrainConfig(weight_decay=0.1, layer_lr_decay=0.5))
    names = {id(p): n for n, p in model.named_parameters()}
    assert sum(len(group["params"]) for group in groups) == len(names)  # every parameter in one group
    for group in groups:
        decayed = {names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in group["params"]}
        assert decayed == {group["weight_decay"] == 0.0}, group["name"]
    assert {group["name"] for group in groups} == {"embeddings", "layer_0", "layer_1", "top", "head"}
