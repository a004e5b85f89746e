"""LoRA (model.lora) through the real CLI on a tiny saved BERT (with train.ema_decay): only the adapters and the head
train, final/ is a merged plain model that pipeline() and `ptrain eval` score alike, adapter/ loads in peft, a
killed run resumes bitwise. In-process: fast paths, gradient checkpointing and parameter groups under LoRA; config
refusals."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from sklearn.metrics import f1_score
from transformers import AutoModelForSequenceClassification, BertConfig, BertModel, pipeline

from ptrain.config import LoraSettings, TrainConfig
from ptrain.errors import ConfigError, ModelError
from ptrain.inference.exports import load_exported
from ptrain.model.loading import enable_gradient_checkpointing
from ptrain.model.lora import add_lora, plain_model
from ptrain.tasks import load_config
from ptrain.training.param_groups import parameter_groups
from tests.conftest import CONFIGS, DATA_DIR, REPO, run_cli, tiny_overrides
from tests.test_fast_paths import active_paths, assert_same, loss_and_grads, needs_tested_versions, tiny_bert

# 200 rows, batch 32, accumulation 2: 4 optimizer steps per epoch, 12 in all; a checkpoint at step 6 (and 12).
SETTINGS = {
    "model.lora.r": "4",
    "model.scratch_config": "null",
    "train.learning_rate": "0.01",
    "train.gradient_accumulation_steps": "2",
    "train.checkpoint_every_steps": "6",
    "train.checkpoint_at_epoch_end": "false",  # a checkpoint takes longer than the steps between two
    "train.log_every_steps": "1",
    "train.eval_every_steps": "3",
    "data.max_eval_rows": "100",
    "train.ema_decay": "0.8",  # the exports and the adapter are the average of what trains: adapters and head
}
ADAPTED = (".query.", ".value.")  # peft's default targets for BERT


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """tiny.yaml's random BERT saved as a folder: the pretrained model LoRA adapts (its weights must not change),
    and the base adapter/adapter_config.json names."""
    folder = tmp_path_factory.mktemp("base") / "bert"
    options = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())["model"]["scratch_config"]
    options.pop("model_type")
    torch.manual_seed(0)  # large random weights: features that differ between texts, for the head to learn from
    BertModel(BertConfig(**options, initializer_range=0.2)).save_pretrained(folder)
    return folder


def lora_args(out: Path, cache: Path, base: Path, **extra: str) -> list[str]:
    settings = {**SETTINGS, "model.name_or_path": str(base), **extra}
    return [str(CONFIGS / "tiny.yaml"), *tiny_overrides(out, cache, rows=200, **settings)]


def run_dir_of(out: Path) -> Path:
    (run_dir,) = (out / "runs" / "tiny").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, cache_dir, base) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("lora")
    result = run_cli("train", *lora_args(out, cache_dir, base))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir_of(out), result.stdout


@pytest.mark.slow
def test_only_adapters_and_head_train_and_final_is_the_merged_plain_model(lora_run, base):
    run_dir, stdout = lora_run
    assert "trainable parameters (0.1" in stdout  # 2,438 of 2.0M: adapters on query and value, and the head
    initial, final = load_file(base / "model.safetensors"), load_file(run_dir / "final" / "model.safetensors")
    assert not [key for key in final if "lora_" in key or "base_layer" in key or "modules_to_save" in key]
    for key, weight in initial.items():
        adapted = any(part in f".{key}" for part in ADAPTED) and key.endswith(".weight")
        assert torch.equal(final[f"bert.{key}"], weight) != adapted, key  # only adapted matrices moved
    assert {key for key in final if not key.startswith("bert.")} == {"classifier.weight", "classifier.bias"}

    from peft import AutoPeftModelForSequenceClassification

    adapter = run_dir / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    saved = set(load_file(adapter / "adapter_model.safetensors"))  # the adapters and the trained head alone
    assert {"base_model.model.classifier.weight", "base_model.model.classifier.bias"} < saved
    assert all("lora_" in key or ".classifier." in key for key in saved)
    merged = AutoModelForSequenceClassification.from_pretrained(run_dir / "final").eval()
    # The base model comes from adapter_config.json; its head's label count from the caller.
    adapted = AutoPeftModelForSequenceClassification.from_pretrained(adapter, id2label=merged.config.id2label).eval()
    inputs = {"input_ids": torch.tensor([[101, 1045, 2514, 3407, 102]]), "attention_mask": torch.ones(1, 5, dtype=int)}
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, adapted(**inputs).logits, atol=1e-5, rtol=1e-4)
    with pytest.raises(ModelError, match="a LoRA adapter without its base model; point --model at the merged"):
        load_exported(str(adapter))  # ptrain eval/predict --model RUN/adapter


@pytest.mark.slow
def test_pipeline_on_final_reproduces_ptrain_eval(lora_run):
    run_dir, _ = lora_run
    rows = [line.rsplit(";", 1) for line in (DATA_DIR / "emotion" / "val.txt").read_text().splitlines()[:100]]
    classify = pipeline("text-classification", model=str(run_dir / "final"))
    predicted = [p["label"] for p in classify([text for text, _ in rows], truncation=True, max_length=64)]
    assert len(set(predicted)) > 1  # the model learned more than the majority class
    args = ("eval", str(CONFIGS / "tiny.yaml"), "data.max_eval_rows=100", "train.mixed_precision=no")
    result = run_cli(*args, "--model", str(run_dir / "final"))
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout)
    gold = [label for _, label in rows]
    assert scores["accuracy"] == pytest.approx(sum(p == g for p, g in zip(predicted, gold)) / len(gold), abs=1e-6)
    assert scores["weighted_f1"] == pytest.approx(f1_score(gold, predicted, average="weighted"), abs=1e-6)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigkill_then_resume_gives_the_uninterrupted_weights(lora_run, cache_dir, base, tmp_path):
    log = tmp_path / "log.txt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    args = lora_args(tmp_path, cache_dir, base)
    command = [sys.executable, "-m", "ptrain", "train", *args]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    while "step 7/12" not in log.read_text():  # after the checkpoint of step 6, mid-epoch
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = run_cli("train", *args, "train.resume=auto")
    assert result.returncode == 0 and "ptrain: resumed from" in result.stdout, result.stderr[-3000:]
    resumed, reference = run_dir_of(tmp_path), lora_run[0]
    for file in ("final/model.safetensors", "adapter/adapter_model.safetensors"):
        weights, expected = load_file(resumed / file), load_file(reference / file)
        assert weights.keys() == expected.keys()
        assert all(torch.equal(weights[key], expected[key]) for key in expected), file
    final = [json.loads((folder / "metrics.json").read_text())["final"] for folder in (resumed, reference)]
    assert final[0] == final[1]


def lora_bert(dropout: float = 0.0, **settings):
    """tiny_bert with LoRA adapters whose B matrices are random (peft starts them at zero: no gradient for A)."""
    model = add_lora(tiny_bert(), LoraSettings(dropout=dropout, **settings), "SEQ_CLS")
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)
    return model


@needs_tested_versions
def test_fast_paths_under_lora_give_the_plain_loss_and_gradients():
    plain = lora_bert()
    fast = copy.deepcopy(plain)
    assert active_paths(plain_model(fast)) == [
        "[CLS]-only last layer",
        "SFC64 dropout masks",
        "oneDNN-packed evaluation Linears",
    ]
    reference, patched = loss_and_grads(plain), loss_and_grads(fast)
    assert_same(reference, patched)
    last_query = "base_model.model.bert.encoder.layer.1.attention.self.query.lora_A.default.weight"
    assert patched[1][last_query].abs().sum() > 0  # the patched last layer runs the adapters
    assert set(patched[1]) == {name for name, param in plain.named_parameters() if param.requires_grad}
    with_dropout = lora_bert(dropout=0.1)
    active_paths(plain_model(with_dropout))
    dropouts = [module for name, module in with_dropout.named_modules() if name.endswith("lora_dropout.default")]
    assert dropouts and all(type(module).__name__ == "FastDropout" for module in dropouts)


def test_gradient_checkpointing_under_lora_gives_the_same_gradients():
    plain = lora_bert()
    checkpointed = copy.deepcopy(plain)
    enable_gradient_checkpointing(plain_model(checkpointed))
    assert plain_model(checkpointed).is_gradient_checkpointing
    assert_same(loss_and_grads(plain), loss_and_grads(checkpointed))


def test_parameter_groups_under_lora_put_adapters_in_their_layer_and_the_head_apart():
    model = lora_bert()
    train = TrainConfig(learning_rate=1e-3, layer_lr_decay=0.5, head_learning_rate=1e-2)
    names = {id(param): name for name, param in model.named_parameters()}
    rates = {names[id(p)]: group["lr"] for group in parameter_groups(model, train) for p in group["params"]}
    assert set(rates) == {name for name, param in model.named_parameters() if param.requires_grad}
    for name, lr in rates.items():
        expected = 1e-2 if ".classifier." in name else 1e-3 if ".layer.1." in name else 5e-4
        assert lr == pytest.approx(expected), name
    assert any(".layer.0." in name for name in rates) and any(".classifier.modules_to_save" in n for n in rates)


def test_lora_config_defaults_and_refusals():
    lora = load_config(CONFIGS / "tiny.yaml", ["model.lora.r=8"]).model.lora
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules) == (8, 16, 0.1, None)  # the rest defaulted
    assert load_config(CONFIGS / "tiny.yaml").model.lora is None
    with pytest.raises(ConfigError, match="model.lora is not supported for task linear_probe; remove it"):
        load_config(CONFIGS / "probe_emotion.yaml", ["model.lora.r=8"])
    with pytest.raises(ConfigError, match="model.lora trains adapters in the encoder, model.freeze_encoder"):
        load_config(CONFIGS / "tiny.yaml", ["model.lora=true", "model.freeze_encoder=true"])
    with pytest.raises(ConfigError, match="override model.lora.target_modules: .* is empty"):
        load_config(CONFIGS / "tiny.yaml", ["model.lora.target_modules=[]"])


def test_missing_or_unsupported_targets_are_refused_in_one_line():
    with pytest.raises(ConfigError) as refused:
        add_lora(tiny_bert(), LoraSettings(target_modules=["query", "nonexistent"]), "SEQ_CLS")
    assert str(refused.value) == (
        "model.lora.target_modules: no module 'nonexistent' in BertForSequenceClassification; "
        "its linear layers: query, key, value, dense (or give [all-linear])"
    )
    with pytest.raises(ConfigError, match=r"model.lora.target_modules \['LayerNorm'\]: Target module LayerNorm"):
        add_lora(tiny_bert(), LoraSettings(target_modules=["LayerNorm"]), "SEQ_CLS")  # not a layer LoRA adapts
    # under FSDP: tests/test_engines.py; under ZeRO-3: refused (engine.check_supported)
