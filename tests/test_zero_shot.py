"""Zero-shot classification with an NLI export: a tiny model trained on SICK pairs through the CLI loads in
pipeline("zero-shot-classification"), and `ptrain predict --candidate-labels` gives the pipeline's own numbers."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import CONFIGS, run_cli, train_tiny

TEXTS = ["i feel so happy today", "this is terrible and scary", "i am angry at everyone", "what a lovely surprise"]
LABELS = ["joy", "fear", "anger", "surprise"]


@pytest.fixture(scope="module")
def nli_export(tmp_path_factory, cache_dir):
    """configs/tiny_nli.yaml trained 1 epoch on 300 SICK training pairs: its final export."""
    tmp_path = tmp_path_factory.mktemp("nli")
    return train_tiny(tmp_path, cache_dir, rows=300, config=CONFIGS / "tiny_nli.yaml") / "final"


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in TEXTS))
    return path


def test_the_pipeline_and_ptrain_predict_give_the_same_zero_shot_labels_and_scores(nli_export, texts_file, tmp_path):
    from transformers import pipeline

    assert json.loads((nli_export / "config.json").read_text())["label2id"] == {
        "ENTAILMENT": 0,
        "NEUTRAL": 1,
        "CONTRADICTION": 2,
    }
    classifier = pipeline("zero-shot-classification", model=str(nli_export))
    assert classifier.entailment_id == 0
    template = "This text is about {}."
    expected = classifier(TEXTS, candidate_labels=LABELS, hypothesis_template=template, batch_size=64)

    out = tmp_path / "zero_shot.jsonl"
    result = run_cli(
        "predict", "--model", str(nli_export), "--input", str(texts_file), "--output", str(out),
        "--candidate-labels", ",".join(LABELS), "--hypothesis-template", template, "--precision", "no",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["text"] for row in rows] == TEXTS
    for row, reference in zip(rows, expected):
        assert row["label"] == reference["labels"][0]
        assert row["score"] == pytest.approx(reference["scores"][0], abs=1e-6)
        scores = dict(zip(reference["labels"], reference["scores"]))
        assert {label: row[f"prob_{label}"] for label in LABELS} == pytest.approx(scores, abs=1e-6)
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_hypothesis_template_without_braces_is_refused_in_one_line(nli_export, texts_file):
    result = run_cli(
        "predict", "--model", str(nli_export), "--input", str(texts_file),
        "--candidate-labels", "joy,fear", "--hypothesis-template", "This example is a feeling.",
    )  # fmt: skip
    line = one_line_error(result)
    assert "--hypothesis-template" in line and "{}" in line


def test_an_export_without_an_entailment_label_is_refused_in_one_line(nli_export, texts_file, tmp_path):
    emotion = tmp_path / "emotion_export"
    shutil.copytree(nli_export, emotion)
    config = json.loads((emotion / "config.json").read_text())
    names = ["sadness", "joy", "anger"]
    config["id2label"], config["label2id"] = dict(enumerate(names)), {name: i for i, name in enumerate(names)}
    (emotion / "config.json").write_text(json.dumps(config))
    result = run_cli("predict", "--model", str(emotion), "--input", str(texts_file), "--candidate-labels", "joy,fear")
    line = one_line_error(result)
    assert "--candidate-labels" in line and "no entailment label" in line and "sick_nli.yaml" in line


def test_the_sick_config_splits_by_semeval_set(tmp_path, cache_dir):
    """Every row of SICK.txt lands in the split its SemEval_set names (TRAIN / TRIAL / TEST: 4,439 / 495 / 4,906)."""
    result = run_cli(
        "train", str(CONFIGS / "tiny_nli.yaml"), f"output_dir={tmp_path / 'runs'}", f"data.cache_dir={cache_dir}",
        "data.max_train_rows=null", "data.max_eval_rows=null", "train.max_steps=1", "train.warmup_ratio=0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rows train 4,439, validation 495, test 4,906;" in result.stdout + result.stderr
