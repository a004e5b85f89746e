"""`ptrain bench CHAT_CONFIG --compare-trl [--loss-check]` through the CLI: ptrain and TRL's SFTTrainer (default and
packed settings) measured in one run, every figure present; the loss check trains every side on the same labelled
tokens and scores it with ptrain's evaluation; the option refused in one line where it cannot run."""

from __future__ import annotations

import json
import math
import os

import pytest

from ptrain.runtime.precision import resolve_precision
from tests.conftest import CONFIGS, REPO, run_cli, tiny_overrides

SIDES = ("ptrain", "trl_default", "trl_packed")


@pytest.mark.slow
def test_bench_compares_with_trl_default_and_packed_and_checks_the_loss(tmp_path, cache_dir):
    out = tmp_path / "bench.json"
    overrides = tiny_overrides(tmp_path, cache_dir, rows=48, **{"data.max_eval_rows": "24", "train.epochs": "1"})
    result = run_cli(
        "bench",
        str(CONFIGS / "tiny_chat.yaml"),
        *overrides,
        "--steps",
        "2",
        "--warmup-steps",
        "1",
        "--compare-trl",
        "--loss-check",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    fields = ("tokens_per_second", "labelled_tokens_per_second", "samples_per_second", "peak_rss_gib", "mfu")
    for side in SIDES:
        train = report[side]["train"]
        for field in fields:
            assert train[field] > 0, (side, field)
        assert train["labelled_tokens_per_second"] < train["tokens_per_second"]  # prompts carry no labels
        assert 0 <= train["padding_fraction"] < 1
    assert report["trl_default"]["train"]["padding_fraction"] > report["trl_packed"]["train"]["padding_fraction"]
    assert report["precision"] == resolve_precision("auto", "cpu").name  # every side in the `auto` rule's precision
    assert set(report["trl_ratios"]) == {"default", "packed"}
    assert all(ratio > 0 for ratios in report["trl_ratios"].values() for ratio in ratios.values())
    for row in ("TRL default train", "TRL packed train", "ptrain / TRL default", "ptrain / TRL packed"):
        assert row in result.stdout, row
    check = report["loss_check"]
    losses = [check[side]["validation_loss"] for side in SIDES]
    assert all(math.isfinite(loss) and loss > 0 for loss in losses)
    tokens = {check[side]["labelled_tokens"] for side in SIDES}
    assert len(tokens) == 1 and tokens.pop() > 0  # the same training tokens on every side, one epoch each
    assert check["relative_difference"]["packed"] == pytest.approx(losses[2] / losses[0] - 1)
    assert "TRL packed / ptrain validation loss" in result.stdout
    assert not (tmp_path / "runs").exists()  # the bench leaves no run folder behind


@pytest.mark.end_to_end
def test_compare_trl_is_refused_in_one_line_where_it_cannot_run(tmp_path, cache_dir):
    other = run_cli("bench", str(CONFIGS / "tiny.yaml"), *tiny_overrides(tmp_path, cache_dir), "--compare-trl")
    assert other.returncode == 2 and other.stderr.strip().count("\n") == 0, other.stderr[-2000:]
    assert "--compare-trl compares chat fine-tuning" in other.stderr and "sequence_classification" in other.stderr
    chat = [str(CONFIGS / "tiny_chat.yaml"), *tiny_overrides(tmp_path, cache_dir)]
    alone = run_cli("bench", *chat, "--loss-check")
    assert alone.returncode == 2 and "add --compare-trl" in alone.stderr, alone.stderr[-2000:]
    stub = tmp_path / "without_trl" / "trl"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('trl is not installed')\n")
    path = os.pathsep.join(filter(None, [str(stub.parent), str(REPO), os.environ.get("PYTHONPATH")]))
    missing = run_cli("bench", *chat, "--compare-trl", env={"PYTHONPATH": path})
    assert missing.returncode == 2 and "pip install 'ptrain[bench]'" in missing.stderr, missing.stderr[-2000:]
