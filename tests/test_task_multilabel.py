"""Task multi_label_classification through the real CLI: a tiny random BERT on 300 rows of the CoNLL-2003
entity-type stand-in (ptrain/data/standins.py); label parsing and its errors on small datasets."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import pipeline

from ptrain.errors import ConfigError, DataError
from ptrain.tasks import load_config
from ptrain.tasks.multilabel import MultiLabelClassification, label_lists
from tests.conftest import CONFIGS, run_cli, tiny_overrides

TYPES = ["LOC", "MISC", "ORG", "PER"]
# A tiny model on 300 rows learns the label priors (0.24-0.44) first: a threshold below them makes F1 non-zero.
EXTRA = {
    "train.epochs": "4",
    "train.log_every_steps": "2",
    "train.eval_every_steps": "20",
    "data.max_length": "32",
    "train.learning_rate": "3e-3",
    "multi_label_classification.decision_threshold": "0.35",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir, standins):
    tmp = tmp_path_factory.mktemp("multilabel")
    overrides = tiny_overrides(tmp, cache_dir, rows=300, **{**EXTRA, "data.data_dir": str(standins)})
    result = run_cli("train", str(CONFIGS / "tiny_multilabel.yaml"), *overrides)
    assert result.returncode == 0, result.stderr[-4000:]
    (run_dir,) = (tmp / "runs" / "tiny_multilabel").iterdir()
    return run_dir, result


@pytest.mark.slow
def test_loss_falls_and_f1_scores_are_reported(trained):
    run_dir, result = trained
    assert "task multi_label_classification, 4 labels" in result.stdout
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    losses = [event.value for event in acc.Scalars("train/loss")]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses
    scalars = set(acc.Tags()["scalars"])
    assert {"eval/micro_f1", "eval/macro_f1", "eval/subset_accuracy", "eval/loss"} <= scalars
    assert {f"eval_f1_per_label/{name}" for name in TYPES} <= scalars
    table = acc.Tensors("eval/per_label_scores/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert table.startswith("| label | precision | recall | f1 | support |") and table.count("\n") == 5
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["best"]["micro_f1"] <= 1 and 0 <= metrics["final"]["subset_accuracy"] <= 1


@pytest.mark.slow
def test_export_applies_sigmoid_in_pipeline_and_predict_returns_labels_over_threshold(trained, tmp_path):
    run_dir, _ = trained
    config = json.loads((run_dir / "best" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and config["decision_threshold"] == 0.35
    texts = ["Peter Blackburn flew to Brussels .", "The match ended in a draw ."]
    scored = pipeline("text-classification", model=str(run_dir / "best"), top_k=None)(texts)
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n")
    result = run_cli("predict", "--model", str(run_dir / "best"), "--input", str(source), "--precision", "no")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    for scores, row in zip(scored, rows):
        # independent sigmoids (they need not sum to 1), the same numbers ptrain predict gives in fp32
        assert {s["label"]: s["score"] for s in scores} == pytest.approx({n: row[f"prob_{n}"] for n in TYPES}, abs=1e-4)
        assert row["labels"] == "|".join(n for n in TYPES if row[f"prob_{n}"] > 0.35)


@pytest.mark.slow
def test_eval_command_matches_the_training_scores(trained, standins):
    run_dir, _ = trained
    result = run_cli(
        "eval",
        str(CONFIGS / "tiny_multilabel.yaml"),
        f"data.data_dir={standins}",
        "data.max_eval_rows=200",
        "data.max_length=32",
        "multi_label_classification.decision_threshold=0.35",
        "--model",
        str(run_dir / "final"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert json.loads(result.stdout)["micro_f1"] == pytest.approx(final["micro_f1"], abs=1e-6)


def config(tmp_path, *overrides):
    return load_config(CONFIGS / "tiny_multilabel.yaml", [f"output_dir={tmp_path}", *overrides])


def test_labels_from_a_delimited_string_and_names_sorted_from_the_data(tmp_path):
    cfg = config(
        tmp_path, 'multi_label_classification.label_separator="|"'
    )  # a bare | is YAML's block-scalar sign: it must be quoted
    ds = Dataset.from_dict({"text": ["a", "b", "c"], "labels": ["PER|LOC", "ORG", " MISC | PER "]})
    assert label_lists(cfg, ds, "train") == [["PER", "LOC"], ["ORG"], ["MISC", "PER"]]
    assert MultiLabelClassification().label_names(cfg, ds) == TYPES
    with pytest.raises(ConfigError, match="multi_label_classification.label_separator is empty"):
        config(tmp_path, "multi_label_classification.label_separator=|")


def test_bad_labels_are_one_line_naming_the_row(tmp_path):
    ds = Dataset.from_dict({"text": ["a", "b"], "labels": ["PER", "PER|LOC"]})
    with pytest.raises(DataError, match="label 'PER' at row 0 is a string; give a list of label names"):
        label_lists(config(tmp_path), ds, "train")
    listed = Dataset.from_dict({"text": ["a", "b"], "labels": [["PER"], ["PER", "DATE"]]})
    with pytest.raises(
        DataError, match=r"label 'DATE' at row 1 is not one of the labels \['LOC', 'MISC', 'ORG', 'PER'\]"
    ):
        MultiLabelClassification().encoder(
            config(tmp_path, "data.label_names=[LOC,MISC,ORG,PER]"), None, TYPES, listed, "train"
        )
