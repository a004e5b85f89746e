"""Task regression through the real CLI: a tiny random BERT on 300 SST-2 rows with the 0/1 labels as numbers."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import pipeline

from ptrain.errors import DataError
from ptrain.tasks.regression import check_numeric
from tests.conftest import CONFIGS, run_cli, tiny_overrides

EXTRA = {"train.epochs": "4", "train.log_every_steps": "2", "train.eval_every_steps": "20", "data.max_length": "32"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    tmp = tmp_path_factory.mktemp("regression")
    result = run_cli("train", str(CONFIGS / "tiny_regression.yaml"), *tiny_overrides(tmp, cache_dir, rows=300, **EXTRA))
    assert result.returncode == 0, result.stderr[-4000:]
    (run_dir,) = (tmp / "runs" / "tiny_regression").iterdir()
    return run_dir


@pytest.mark.slow
def test_loss_falls_and_correlations_are_reported(trained):
    acc = EventAccumulator(str(trained), size_guidance={"scalars": 0, "images": 0, "tensors": 0}).Reload()
    losses = [event.value for event in acc.Scalars("train/loss")]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses
    assert {"eval/pearson", "eval/spearman", "eval/loss", "eval/mae"} <= set(acc.Tags()["scalars"])
    assert "eval/predicted_vs_gold" in acc.Tags()["images"]
    assert "eval/largest_errors/text_summary" in acc.Tags()["tensors"]
    metrics = json.loads((trained / "metrics.json").read_text())
    assert {"pearson", "spearman", "loss", "mae"} <= set(metrics["final"])
    assert -1 <= metrics["final"]["pearson"] <= 1 and metrics["final"]["loss"] < 0.5


@pytest.mark.slow
def test_export_predicts_raw_values_in_pipeline_predict_and_eval(trained, tmp_path):
    config = json.loads((trained / "final" / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "label"}
    texts = ["a charming and affecting journey", "bleak and desperate"]
    scored = pipeline("text-classification", model=str(trained / "final"))(texts)
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n")
    result = run_cli("predict", "--model", str(trained / "final"), "--input", str(source), "--precision", "no")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    # no sigmoid or softmax: the pipeline's score is the model's output, the number `ptrain predict` gives in fp32
    assert [r["label"] for r in scored] == ["label", "label"]
    assert [r["score"] for r in scored] == pytest.approx([r["label"] for r in rows], abs=1e-4)
    result = run_cli(
        "eval",
        str(CONFIGS / "tiny_regression.yaml"),
        "data.max_eval_rows=200",
        "data.max_length=32",
        "--model",
        str(trained / "final"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((trained / "metrics.json").read_text())["final"]
    assert json.loads(result.stdout)["loss"] == pytest.approx(final["loss"], abs=1e-5)


def test_a_label_that_is_not_a_number_is_one_line_naming_the_row():
    ds = Dataset.from_dict({"sentence": ["good film", "bad film", "so so"], "label": ["0.9", "terrible", "0.5"]})
    ds.info.description = "reviews.tsv"
    with pytest.raises(DataError) as info:
        check_numeric(ds, "train", "label")
    assert (
        str(info.value) == "reviews.tsv: label 'terrible' at row 1 is not a number; "
        "task regression needs a numeric data.label_column ('label')"
    )
    check_numeric(
        Dataset.from_dict({"label": [0.0, 1.5]}), "train", "label"
    )  # numbers pass, as do numeric strings above row 1
