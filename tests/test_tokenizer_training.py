"""model.train_tokenizer: a BPE tokenizer learnt from the training split, cached, exported with the model."""

from __future__ import annotations

import json

import pytest
from transformers import pipeline

from ptrain.model.tokenizer_training import train_bpe
from tests.conftest import CONFIGS, DATA_DIR, run_cli, tiny_overrides

SCRATCH_WITHOUT_VOCAB = ["model.tokenizer=null", "model.scratch_config.vocab_size=null"]


def test_byte_level_bpe_round_trips_any_text():
    lines = (DATA_DIR / "tiny_shakespeare" / "input.txt").read_text().splitlines()[:2000]
    tokenizer = train_bpe(lines, vocab_size=600, min_frequency=2)
    assert len(tokenizer) == 600
    text = "First Citizen:\n  Before we proceed — hear me speak, café!"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # newlines, spaces and unseen characters survive
    assert len(tokenizer("Before we proceed any further")["input_ids"]) < len("Before we proceed any further") / 2


@pytest.mark.slow
def test_a_scratch_model_trains_with_its_own_tokenizer_and_exports_it(tmp_path):
    cache_dir = tmp_path / "cache"  # its own: other tests of this worker train tokenizers into the shared one
    overrides = tiny_overrides(
        tmp_path, cache_dir, rows=300, **{"train.epochs": "1", "model.train_tokenizer.vocab_size": "500"}
    )
    first = run_cli("train", str(CONFIGS / "tiny.yaml"), *overrides, *SCRATCH_WITHOUT_VOCAB)
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_cli("train", str(CONFIGS / "tiny.yaml"), *overrides, *SCRATCH_WITHOUT_VOCAB)
    assert second.returncode == 0, second.stderr[-2000:]
    runs = sorted((tmp_path / "runs" / "tiny").iterdir())
    vocabularies = [json.loads((run / "final" / "tokenizer.json").read_text())["model"]["vocab"] for run in runs]
    assert len(vocabularies[0]) == 500 and vocabularies[0] == vocabularies[1]  # the second run read the cache
    config = json.loads((runs[0] / "final" / "config.json").read_text())
    assert config["vocab_size"] == 500  # taken from the tokenizer
    assert len(list((cache_dir / "tokenizers").iterdir())) == 1  # trained once, read back by the second run
    classify = pipeline("text-classification", model=str(runs[0] / "final"))
    assert classify("i feel wonderful today")[0]["label"] in {"sadness", "joy", "love", "anger", "fear", "surprise"}


def test_train_tokenizer_is_for_scratch_models_only(tmp_path):
    result = run_cli("check", str(CONFIGS / "emotion.yaml"), "model.train_tokenizer.vocab_size=1000")
    assert result.returncode == 2
    assert "model.train_tokenizer is for scratch_config models" in result.stderr
    result = run_cli("check", str(CONFIGS / "tiny.yaml"), "model.train_tokenizer.vocab_size=1000")
    assert result.returncode == 2 and "model.tokenizer or model.train_tokenizer (one of them)" in result.stderr
