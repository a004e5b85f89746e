"""Task linear_probe through the real CLI: tiny random BERT features of 300 emotion rows, the logistic-regression
head against the majority class, the feature cache, the projector, and the export in use."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import pipeline

from ptrain.tasks import load_config
from ptrain.training.probe import fit_head
from tests.conftest import CONFIGS, run_cli, tiny_overrides

EMOTIONS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
EXTRA = {
    "task": "linear_probe",
    "linear_probe.pooling": "mean",
    "linear_probe.projector_rows": "50",
    "data.test_file": "emotion/test.txt",
}


@pytest.fixture(scope="module")
def probed(tmp_path_factory, cache_dir):
    tmp = tmp_path_factory.mktemp("probe")
    result = run_cli("train", str(CONFIGS / "tiny.yaml"), *tiny_overrides(tmp, cache_dir, rows=300, **EXTRA))
    assert result.returncode == 0, result.stderr[-4000:]
    (run_dir,) = (tmp / "runs" / "tiny").iterdir()
    return run_dir, result, tmp


@pytest.mark.slow
def test_metrics_hold_the_probe_and_the_majority_baseline(probed):
    run_dir, result, _ = probed
    assert "feature cache reused for none" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("final", "test_final"):
        assert {"accuracy", "macro_f1", "weighted_f1", "majority_accuracy", "majority_weighted_f1"} <= set(
            metrics[split]
        )
    # the first 300 training rows: the probe fits them better than always answering their commonest label
    assert metrics["train_final"]["accuracy"] > metrics["train_final"]["majority_accuracy"] + 0.1
    assert metrics["final"]["majority_accuracy"] == pytest.approx(0.32, abs=0.1)


@pytest.mark.slow
def test_features_go_to_the_projector_with_their_labels(probed):
    run_dir, _, _ = probed
    assert "validation_features" in (run_dir / "projector_config.pbtxt").read_text()
    (metadata,) = run_dir.glob("*/validation_features/metadata.tsv")
    lines = metadata.read_text().splitlines()
    assert lines[0] == "label\ttext" and len(lines) == 51 and lines[1].split("\t")[0] in EMOTIONS


@pytest.mark.slow
def test_second_run_reads_the_feature_cache(probed, cache_dir):
    _, _, tmp = probed
    result = run_cli("train", str(CONFIGS / "tiny.yaml"), *tiny_overrides(tmp, cache_dir, rows=300, **EXTRA))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "feature cache reused for ['train', 'validation', 'test']" in result.stdout
    first, second = sorted((tmp / "runs" / "tiny").iterdir())
    assert (
        json.loads((first / "metrics.json").read_text())["final"]
        == json.loads((second / "metrics.json").read_text())["final"]
    )


@pytest.mark.slow
def test_export_is_an_encoder_for_pipeline_and_a_classifier_for_predict_and_eval(probed, tmp_path):
    run_dir, _, _ = probed
    vectors = pipeline("feature-extraction", model=str(run_dir / "final"))("i feel so happy today")
    assert len(vectors[0][0]) == 64  # one hidden vector per token, the tiny model's width
    source = tmp_path / "in.txt"
    source.write_text("i feel so happy today\ni am scared of the dark\n")
    result = run_cli("predict", "--model", str(run_dir / "final"), "--input", str(source))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(r["label"] in EMOTIONS for r in rows)
    assert sum(rows[0][f"prob_{n}"] for n in EMOTIONS) == pytest.approx(1.0, abs=1e-5)
    result = run_cli(
        "eval",
        str(CONFIGS / "tiny.yaml"),
        "task=linear_probe",
        "linear_probe.pooling=mean",
        "data.max_eval_rows=200",
        "--model",
        str(run_dir / "final"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert json.loads(result.stdout)["accuracy"] == pytest.approx(
        final["accuracy"], abs=1e-6
    )  # the same batches as in training


def test_folded_head_equals_scikit_learn_on_standardised_features(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    cfg = load_config(CONFIGS / "tiny.yaml", ["task=linear_probe", f"output_dir={tmp_path}"])
    generator = torch.Generator().manual_seed(0)
    for classes in (2, 3):
        features = torch.randn(200, 8, generator=generator) * 5 + 3
        labels = torch.randint(0, classes, (200,), generator=generator)
        weight, bias = fit_head(cfg, features, labels, classes)
        scaled = StandardScaler().fit_transform(features.numpy())
        reference = LogisticRegression(max_iter=1000).fit(scaled, labels.numpy()).predict_proba(scaled)
        assert (features @ weight.T + bias).softmax(-1).numpy() == pytest.approx(reference, abs=1e-4)
