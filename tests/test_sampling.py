"""Splits from a column, seeded stratified samples and k-fold cross-validation, on a CSV made from the shared
emotion data; a 2-fold sweep averaged by `ptrain runs`."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from ptrain.data.splits import load_raw_splits
from ptrain.errors import DataError
from ptrain.tasks import get_task, load_config
from tests.conftest import CONFIGS, DATA_DIR, run_cli, tiny_overrides

SPLIT_OF_ROW = ["train", "train", "train", "dev", "test"]  # 60% / 20% / 20%


def emotion_csv(path: Path, rows: int = 400, split_of=lambda i: SPLIT_OF_ROW[i % 5]) -> Path:
    """The first `rows` emotion training rows as a CSV with text, label and split columns."""
    lines = (DATA_DIR / "emotion" / "train.txt").read_text().splitlines()[:rows]
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "label", "split"])
        for i, line in enumerate(lines):
            writer.writerow([*line.rsplit(";", 1), split_of(i)])
    return path


def csv_overrides(file: Path, *extra: str) -> list[str]:
    return [
        f"data.train_file={file}",
        "data.validation_file=null",
        "data.format=csv",
        "data.column_names=null",
        "data.max_train_rows=null",
        "data.max_eval_rows=null",
        *extra,
    ]


def splits_of(file: Path, *extra: str):
    cfg = load_config(CONFIGS / "tiny.yaml", csv_overrides(file, *extra))
    return load_raw_splits(cfg, get_task(cfg.task))[0]


@pytest.mark.slow
def test_a_split_column_gives_the_splits_and_the_test_split_is_scored(tmp_path, cache_dir):
    file = emotion_csv(tmp_path / "emotion.csv")
    overrides = csv_overrides(file, "data.split_column=split", "train.max_steps=2", "train.eval_every_steps=2")
    result = run_cli("train", str(CONFIGS / "tiny.yaml"), *tiny_overrides(tmp_path, cache_dir), *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rows train 240, validation 80, test 80;" in result.stdout
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    assert set(json.loads((run_dir / "metrics.json").read_text())["test_final"]) >= {"weighted_f1", "loss"}


def test_a_split_value_not_mapped_is_refused_with_its_row_count(tmp_path):
    file = emotion_csv(tmp_path / "emotion.csv", split_of=lambda i: "tset" if i % 10 == 0 else "train")
    with pytest.raises(DataError, match="has the value 'tset' in 40 rows, which data.split_values does not map"):
        splits_of(file, "data.split_column=split")
    splits = splits_of(file, "data.split_column=split", "data.split_values.test=[test, tset]")
    assert len(splits["test"]) == 40 and "split" not in splits["train"].column_names


def test_a_seeded_sample_is_reproducible_and_stratified(tmp_path):
    file = emotion_csv(tmp_path / "emotion.csv", rows=1000, split_of=lambda i: "train" if i % 4 else "val")
    sample = ("data.split_column=split", "data.sample_train_rows=150")
    samples = [splits_of(file, *sample, f"data.sample_seed={seed}") for seed in (0, 0, 1)]
    texts = [s["train"]["text"] for s in samples]
    assert len(texts[0]) == 150 and texts[0] == texts[1] and texts[0] != texts[2]
    full = Counter(splits_of(file, "data.split_column=split")["train"]["label"])
    drawn = Counter(samples[0]["train"]["label"])
    for label, count in full.items():  # each label keeps its share, to the nearest row
        assert abs(drawn[label] - count * 150 / 750) < 1


def test_three_folds_are_disjoint_and_cover_the_training_rows(tmp_path):
    file = emotion_csv(tmp_path / "emotion.csv", rows=300, split_of=lambda i: "train")
    with file.open() as rows:
        pool = Counter((row["text"], row["label"]) for row in csv.DictReader(rows))
    held_out_rows = Counter()
    for fold in range(3):
        splits = splits_of(file, "data.split_column=split", "data.num_folds=3", f"data.fold={fold}")
        held_out = Counter(zip(splits["validation"]["text"], splits["validation"]["label"]))
        trained = Counter(zip(splits["train"]["text"], splits["train"]["label"]))
        assert len(splits["validation"]) == 100 and held_out + trained == pool  # each row in one of the two
        held_out_rows += held_out
    assert held_out_rows == pool  # the three validation folds together: every training row exactly once


@pytest.mark.slow
def test_a_fold_sweep_is_averaged_by_ptrain_runs(tmp_path, cache_dir):
    file = emotion_csv(tmp_path / "emotion.csv", rows=120, split_of=lambda i: "train")
    tiny = tiny_overrides(tmp_path, cache_dir, **{"train.max_steps": "2", "data.split_column": "split"})
    grid = ["data.num_folds=2", "data.fold=0,1"]
    result = run_cli("sweep", str(CONFIGS / "tiny.yaml"), *tiny, *csv_overrides(file)[:4], *grid)
    assert result.returncode == 0, result.stderr[-3000:]
    table = run_cli("runs", str(tmp_path / "runs"))
    assert table.returncode == 0, table.stderr
    assert "mean ± std over folds" in table.stdout and "±" in table.stdout.split("over folds")[1]
