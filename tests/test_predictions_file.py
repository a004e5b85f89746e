"""`ptrain eval --predictions FILE`: one row per validation example, whose mean loss is the printed loss; and the
RUN/metrics.jsonl stream of the run it scores."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import CONFIGS, DATA_DIR, run_cli, scalar_values, tiny_overrides, train_tiny


@pytest.mark.slow
def test_the_predictions_file_has_a_row_per_example_and_its_mean_loss_is_the_printed_loss(tmp_path, cache_dir):
    run_dir = train_tiny(tmp_path, cache_dir, **{"train.max_steps": "4", "train.log_every_steps": "2"})
    stream = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(isinstance(line["time"], float) for line in stream)
    logged = [(line["step"], line["train/loss"]) for line in stream if "train/loss" in line]
    assert logged == [
        (2, pytest.approx(scalar_values(run_dir, "train/loss")[0])),
        (4, pytest.approx(scalar_values(run_dir, "train/loss")[1])),
    ]
    assert [line["step"] for line in stream if "eval/loss" in line] == [4]
    card = (run_dir / "final" / "README.md").read_text()  # the model card, as the Hub lays it out
    assert card.startswith("---\nlibrary_name: transformers") and "pipeline_tag: text-classification" in card
    assert "## Intended uses and limitations" in card and "| validation | " in card
    assert (run_dir / "best" / "README.md").is_file()
    overrides = tiny_overrides(tmp_path, cache_dir, rows=200)
    out = tmp_path / "predictions.csv"
    result = run_cli(
        "eval", str(CONFIGS / "tiny.yaml"), *overrides, "--model", str(run_dir / "final"), "--predictions", str(out)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout[result.stdout.index("{") :])
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 200  # data.max_eval_rows
    names = ["sadness", "joy", "love", "anger", "fear", "surprise"]
    assert list(rows[0]) == ["text", "gold", "predicted", *(f"prob_{n}" for n in names), "loss"]
    assert sum(float(r["loss"]) for r in rows) / len(rows) == pytest.approx(printed["loss"], rel=1e-6)
    accuracy = sum(r["gold"] == r["predicted"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(printed["accuracy"], abs=1e-6)
    validation = (DATA_DIR / "emotion" / "val.txt").read_text().splitlines()
    assert [r["text"] for r in rows[:3]] == [line.rsplit(";", 1)[0] for line in validation[:3]]  # file order

    refused = run_cli("eval", str(CONFIGS / "tiny.yaml"), "--model", str(run_dir / "final"), "--predictions", "p.xlsx")
    assert refused.returncode == 2 and "--predictions p.xlsx: use a .csv, .tsv or .jsonl file name" in refused.stderr


@pytest.mark.slow
def test_predict_reads_sentence_pairs_and_cuts_at_the_trained_length(tmp_path, cache_dir):
    run_dir = train_tiny(tmp_path, cache_dir, **{"train.max_steps": "1"})
    final = run_dir / "final"
    assert json.loads((final / "tokenizer_config.json").read_text())["model_max_length"] == 64  # data.max_length
    pairs = tmp_path / "pairs.csv"
    long_text = " ".join(["word"] * 400)  # past the tiny model's 128 positions: must be cut at 64 tokens
    pairs.write_text(f"premise,hypothesis\ni feel fine,i am happy\n{long_text},i am sad\n")
    out = tmp_path / "out.jsonl"
    args = ["--model", str(final), "--input", str(pairs), "--output", str(out), "--text-column", "premise"]
    result = run_cli("predict", *args, "--text-pair-column", "hypothesis")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["text"], r["text_pair"]) for r in rows] == [("i feel fine", "i am happy"), (long_text, "i am sad")]
    single = run_cli("predict", *args)
    alone = [json.loads(line) for line in out.read_text().splitlines()]
    assert single.returncode == 0 and "text_pair" not in alone[0]
    assert alone[0]["score"] != rows[0]["score"]  # the pair reached the model
