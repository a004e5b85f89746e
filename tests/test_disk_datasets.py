"""Folders written by datasets' save_to_disk as data sources through `ptrain train`: a saved Dataset is the training
rows, a saved DatasetDict gives its splits (as data.train_file or data.hub_dataset), and every data-source mistake
(no such path, a folder that is neither, no train split, a DatasetDict where one split is meant, a damaged folder, a Hub
id that is not cached while offline) is one line, before any run folder."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict

from tests.conftest import CONFIGS, run_cli, tiny_overrides
from tests.test_bad_inputs import assert_refused

LABELS = ("joy", "sadness")


def rows(count: int, start: int = 0) -> Dataset:
    return Dataset.from_dict(
        {
            "text": [f"sample text number {i}" for i in range(start, start + count)],
            "label": [LABELS[i % 2] for i in range(start, start + count)],
        }
    )


def train_on(tmp_path, cache_dir, *data: str):
    settings = [f"data.data_dir={tmp_path}", "data.validation_file=null", "data.format=auto", "data.separator=null"]
    settings.append("train.max_steps=2")
    return run_cli("train", str(CONFIGS / "tiny.yaml"), *tiny_overrides(tmp_path, cache_dir), *settings, *data)


@pytest.mark.slow
def test_a_saved_dataset_is_the_training_rows(tmp_path, cache_dir):
    rows(100).save_to_disk(tmp_path / "saved")
    result = train_on(tmp_path, cache_dir, "data.train_file=saved")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rows train 90, validation 10;" in result.stdout  # data.validation_fraction of the saved rows


@pytest.mark.slow
@pytest.mark.parametrize("key", ["train_file", "hub_dataset"])
def test_a_saved_dataset_dict_gives_its_splits(tmp_path, cache_dir, key):
    DatasetDict({"train": rows(80), "validation": rows(20, 80), "test": rows(12, 100)}).save_to_disk(tmp_path / "dd")
    hub = ["data.train_file=null", f"data.hub_dataset={tmp_path}/dd"]
    source = ["data.train_file=dd"] if key == "train_file" else hub
    result = train_on(tmp_path, cache_dir, *source)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rows train 80, validation 20, test 12;" in result.stdout
    (run_dir,) = (tmp_path / "runs").glob("*/*")
    assert "test_final" in json.loads((run_dir / "metrics.json").read_text())


def _damaged(tmp_path):
    rows(10).save_to_disk(tmp_path / "damaged")
    for arrow in (tmp_path / "damaged").glob("*.arrow"):
        arrow.unlink()
    return ["data.train_file=damaged"], ["data.train_file", "cannot read this save_to_disk folder"]


def _neither(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("not data")
    return ["data.train_file=plain"], ["data.train_file", "plain is a folder but not one written by", "save_to_disk"]


def _no_train(tmp_path):
    DatasetDict({"validation": rows(10), "test": rows(10)}).save_to_disk(tmp_path / "dd")
    return ["data.train_file=dd"], ["data.train_file", "splits ['validation', 'test'] and no 'train'"]


def _dict_as_validation(tmp_path):
    rows(40).save_to_disk(tmp_path / "saved")
    DatasetDict({"train": rows(10), "validation": rows(10)}).save_to_disk(tmp_path / "dd")
    return ["data.train_file=saved", "data.validation_file=dd"], ["data.validation_file", "is a saved DatasetDict"]


def _validation_twice(tmp_path):
    DatasetDict({"train": rows(40), "validation": rows(10)}).save_to_disk(tmp_path / "dd")
    (tmp_path / "val.csv").write_text("text,label\nsome text,joy\n")
    return ["data.train_file=dd", "data.validation_file=val.csv"], ["has a validation split", "data.validation_file"]


def _missing(tmp_path):
    return ["data.train_file=nowhere"], ["data.train_file", "nowhere does not exist"]


def _hub_offline(tmp_path):
    source = ["data.train_file=null", "data.hub_dataset=nobody/no-such-dataset"]
    return source, ["data.hub_dataset nobody/no-such-dataset is not in the datasets cache", "HF_HUB_OFFLINE=1"]


def _hub_path_missing(tmp_path):
    return ["data.train_file=null", "data.hub_dataset=./nowhere"], ["data.hub_dataset ./nowhere does not exist"]


@pytest.mark.parametrize(
    "make",
    [_damaged, _neither, _no_train, _dict_as_validation, _validation_twice, _missing, _hub_offline, _hub_path_missing],
    ids=lambda make: make.__name__.strip("_"),
)
def test_each_data_source_mistake_is_one_line(tmp_path, cache_dir, make):
    settings, needles = make(tmp_path)
    assert_refused(train_on(tmp_path, cache_dir, *settings), tmp_path, *needles)
