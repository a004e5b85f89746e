"""`ptrain bench` through the CLI: both sides measured, every reported figure present and plausible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptrain.bench.throughput import busy_machine_warnings
from ptrain.runtime.precision import resolve_precision
from tests.conftest import CONFIGS, run_cli, tiny_overrides


@pytest.mark.slow
def test_bench_compares_with_the_hf_trainer_and_writes_json(tmp_path, cache_dir):
    out = tmp_path / "bench.json"
    result = run_cli(
        "bench",
        str(CONFIGS / "tiny.yaml"),
        *tiny_overrides(tmp_path, cache_dir, rows=300),
        "--steps",
        "4",
        "--warmup-steps",
        "2",
        "--compare-hf",
        "--json",
        str(out),
        "--profile",
        str(tmp_path / "profile"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    profile = json.loads((tmp_path / "profile" / "tiny" / "breakdown.json").read_text())
    shares = {name: stats["share"] for name, stats in profile["categories"].items()}
    assert set(shares) == {"matmul", "attention", "dropout", "optimizer", "data", "other"}
    assert abs(sum(shares.values()) - 1) < 0.02 and shares["matmul"] > 0 and shares["optimizer"] > 0
    assert shares["attention"] > 0 and shares["dropout"] > 0  # the attention Function and the masks, apart
    assert json.loads(Path(profile["trace"]).read_text())["traceEvents"]  # Chrome trace: Perfetto, TensorBoard
    assert "step profile (10 steps" in result.stdout and "trace:" in result.stdout
    assert report["matmul_peak_tflops"] == max(report["matmul_peak_tflops_before_after"]) > 0
    assert report["train_flops_per_token"] > 0
    for side in ("ptrain", "hf_trainer"):
        train, evaluation = report[side]["train"], report[side]["eval"]
        assert train["tokens_per_second"] > 0 and 0 <= train["padding_fraction"] < 1
        peak = report["matmul_peak_tflops"] * 1e12  # MFU: real tokens/s x FLOP per token over the measured peak
        assert train["mfu"] == pytest.approx(train["tokens_per_second"] * report["train_flops_per_token"] / peak)
        for stats in (train, evaluation):  # below 100% on an idle machine; above it, the bench says why
            assert stats["mfu"] > 0 and (stats["mfu"] > 1) <= any("MFU above 100%" in w for w in report["warnings"])
        assert train["peak_rss_gib"] > 0.1 and evaluation["samples_per_second"] > 0
    assert 0 <= report["ptrain"]["train"]["data_wait_share"] < 1
    assert set(report["ratios"]) == {"train", "eval"}
    assert "ptrain / HF Trainer, train real tokens/s" in result.stdout
    hardware = report["hardware"]
    assert hardware["cpu"] and hardware["cpu_capability"] and hardware["threads"] >= 1
    assert hardware["cpu"] in result.stdout and hardware["cpu_capability"] in result.stdout
    assert report["precision"] == resolve_precision("auto", "cpu").name  # both sides: the `auto` rule
    for phase in ("matmul peak", "ptrain: 2 warm-up + 4 timed steps", "HF Trainer: 2 warm-up + 4 timed steps"):
        assert phase in result.stderr, phase  # progress while it runs
    assert not (tmp_path / "runs").exists()  # the bench leaves no run folder behind


def test_a_busy_machine_is_named_in_the_report():
    def report(before, after, mfu):
        side = {"train": {"mfu": 0.4}, "eval": {"mfu": mfu}}
        return {"matmul_peak_tflops_before_after": [before, after], "ptrain": side, "hf_trainer": side}

    assert busy_machine_warnings(report(0.27, 0.26, 0.5)) == []
    (spread,) = busy_machine_warnings(report(0.09, 0.27, 0.5))
    assert "90 GFLOP/s before the timed phases and 270 after" in spread and "idle machine" in spread
    (above,) = busy_machine_warnings(report(0.27, 0.26, 10.1))
    assert above.startswith("MFU above 100% (ptrain eval, hf_trainer eval)")


@pytest.mark.slow
def test_time_to_target_stops_both_sides_at_the_first_evaluation_reaching_it(tmp_path, cache_dir):
    out = tmp_path / "time_to.json"
    overrides = tiny_overrides(tmp_path, cache_dir, rows=300, **{"train.eval_every_steps": "5"})
    result = run_cli(
        "bench", str(CONFIGS / "tiny.yaml"), *overrides, "--time-to", "accuracy=0.2", "--compare-hf", "--json", str(out)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    for side in ("ptrain", "hf_trainer"):
        curve = report[side]["evaluations"]
        assert [point["step"] for point in curve][:1] == [5] and report[side]["step"] == curve[-1]["step"]
        assert (
            curve[-1]["accuracy"] >= 0.2 > max([p["accuracy"] for p in curve[:-1]], default=0)
        )  # stopped at the first
        assert 0 < report[side]["seconds"] < 300
    assert report["speedup"] > 0 and "as fast as the HF Trainer" in result.stdout
    assert report["precision"] == resolve_precision("auto", "cpu").name and report["hardware"]["cpu"] in result.stdout
    bad = run_cli("bench", str(CONFIGS / "tiny.yaml"), *overrides, "--time-to", "f1=0.9")
    assert bad.returncode == 2 and "'f1' is not a sequence_classification metric" in bad.stderr
