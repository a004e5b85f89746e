"""The real CLI on a tiny random BERT and a few hundred real emotion rows: train, look, reload, predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import pipeline

from tests.conftest import CONFIGS, run_cli, tiny_overrides, train_tiny
from tests.test_fast_paths import UNTESTED

pytestmark = pytest.mark.end_to_end  # CI also runs these with each CLI call in a fresh interpreter

EMOTIONS = {"sadness", "joy", "love", "anger", "fear", "surprise"}
TRAIN_SCALARS = [
    "train/loss",
    "train/learning_rate",
    "train/grad_norm",
    "train/tokens_per_second",
    "train/padding_fraction",
    "train/epoch",
]
EVAL_SCALARS = ["eval/loss", "eval/accuracy", "eval/macro_f1", "eval/weighted_f1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    tmp = tmp_path_factory.mktemp("e2e")
    extra = {"train.epochs": "4", "train.log_every_steps": "2", "train.eval_every_steps": "20"}
    result = run_cli("train", str(CONFIGS / "tiny.yaml"), *tiny_overrides(tmp, cache_dir, **extra))
    assert result.returncode == 0, result.stderr[-4000:]
    (run_dir,) = (tmp / "runs" / "tiny").iterdir()
    return run_dir, result, tmp


def events(run_dir: Path) -> EventAccumulator:
    return EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0}).Reload()


@pytest.mark.slow
def test_training_loss_falls_and_dashboards_are_written(trained):
    run_dir, _, _ = trained
    acc = events(run_dir)
    scalars = acc.Tags()["scalars"]
    for tag in TRAIN_SCALARS + EVAL_SCALARS:
        assert tag in scalars, tag
    losses = [event.value for event in acc.Scalars("train/loss")]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses
    steps = [event.step for event in acc.Scalars("train/loss")]
    assert steps == sorted(steps) and steps[0] == 2  # one global-step axis: optimizer steps
    assert "eval/confusion_matrix" in acc.Tags()["images"]
    texts = acc.Tags()["tensors"]
    assert "eval/highest_loss_examples/text_summary" in texts and "config/text_summary" in texts
    table = acc.Tensors("eval/highest_loss_examples/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert table.startswith("| loss | gold | predicted | text |") and table.count("\n") >= 20
    texts = [line.rsplit(" | ", 1)[1].removesuffix(" |") for line in table.splitlines()[2:]]
    assert max(len(piece) for text in texts for piece in text.split("<br>")) <= 70  # narrow columns stay narrow


@pytest.mark.slow
def test_hparams_tab_holds_hyperparameters_and_metrics(trained):
    run_dir, _, _ = trained
    acc = events(run_dir)
    content = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(content)
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["learning_rate"].number_value == pytest.approx(1e-3)
    assert set(start.session_start_info.hparams) == {
        "model",
        "learning_rate",
        "batch",
        "epochs",
        "mixed_precision",
        "seed",
    }
    assert "hparams/best_weighted_f1" in acc.Tags()["scalars"]


@pytest.mark.slow
def test_outputs_config_metrics_and_exports(trained):
    run_dir, result, _ = trained
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 4 and saved["data"]["max_train_rows"] == 400
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"final", "best", "train"} <= set(metrics)
    assert 0 <= metrics["best"]["weighted_f1"] <= 1 and metrics["train"]["optimizer_steps"] == 52
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob("*.old"))
    assert "Traceback" not in result.stderr
    assert str(run_dir / "best") in result.stdout
    paths = "[CLS]-only last layer, SFC64 dropout masks, oneDNN-packed evaluation Linears"
    if UNTESTED:  # other library versions than the paths were tested on: each is off, saying why
        assert all(state.startswith("off") for state in metrics["train"]["fast_paths"].values())
    else:
        assert f"; fast paths: {paths}\n" in result.stdout and set(metrics["train"]["fast_paths"].values()) == {
            "active"
        }


@pytest.mark.slow
def test_export_loads_in_pipeline_and_predicts_label_names(trained):
    run_dir, _, _ = trained
    for folder in ("best", "final"):
        classify = pipeline("text-classification", model=str(run_dir / folder))
        predictions = classify(["i feel so happy today", "i am scared of the dark"])
        assert {p["label"] for p in predictions} <= EMOTIONS


@pytest.mark.slow
def test_second_run_reuses_the_tokenization_cache(trained, cache_dir, tmp_path):
    overrides = tiny_overrides(tmp_path, cache_dir, **{"train.max_steps": "2"})
    result = run_cli("train", str(CONFIGS / "tiny.yaml"), *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tokenization cache reused for ['train', 'validation']" in result.stdout


@pytest.mark.slow
def test_eval_command_scores_an_export(trained):
    run_dir, _, tmp = trained
    result = run_cli("eval", str(CONFIGS / "tiny.yaml"), "data.max_eval_rows=200", "--model", str(run_dir / "final"))
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout)
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert scores["accuracy"] == pytest.approx(final["accuracy"], abs=1e-6)


@pytest.mark.slow
def test_predict_writes_labels_and_probabilities(trained, tmp_path):
    run_dir, _, _ = trained
    source = tmp_path / "tweets.txt"
    source.write_text("i feel wonderful\ni am furious about this\n")
    output = tmp_path / "predictions.csv"
    result = run_cli("predict", "--model", str(run_dir / "best"), "--input", str(source), "--output", str(output))
    assert result.returncode == 0, result.stderr[-3000:]
    import csv

    rows = list(csv.DictReader(output.open()))
    assert [r["text"] for r in rows] == ["i feel wonderful", "i am furious about this"]
    assert all(r["label"] in EMOTIONS for r in rows)
    assert sum(float(rows[0][f"prob_{name}"]) for name in EMOTIONS) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_early_stopping_after_patience_evaluations_without_improvement(tmp_path, cache_dir):
    # A learning rate of 1e-12 leaves predictions unchanged: the second evaluation cannot improve.
    extra = {
        "train.learning_rate": "1e-12",
        "train.eval_every_steps": "2",
        "train.early_stopping_patience": "1",
        "train.warmup_ratio": "0.0",
    }
    run_dir = train_tiny(tmp_path, cache_dir, **extra)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["early_stopped"] is True
    assert metrics["train"]["optimizer_steps"] == 4 and metrics["best"]["step"] == 2
