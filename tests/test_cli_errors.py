"""Mistakes a user makes end in one line naming the culprit, exit code 2, no traceback, no run folder."""

from __future__ import annotations

import pytest

from tests.conftest import CONFIGS, run_cli, tiny_overrides


def assert_one_line_error(result, *needles: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptrain: error: "), result.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(
    "override, needles",
    [
        ("train.lerning_rate=1", ["unknown key 'train.lerning_rate'", "did you mean 'train.learning_rate'"]),
        ("data.train_file=emotion/missing.txt", ["data.train_file", "missing.txt", "does not exist"]),
        ("data.text_column=tweet", ["data.text_column 'tweet'", "train.txt", "['text', 'label']"]),
        ("model.tokenizer=./no/such/model", ["./no/such/model", "does not exist"]),
    ],
)
def test_train_errors(tmp_path, cache_dir, override, needles):
    result = run_cli("train", str(CONFIGS / "tiny.yaml"), *tiny_overrides(tmp_path, cache_dir), override)
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "runs" / "tiny").exists() or not any((tmp_path / "runs" / "tiny").glob("*/best"))


def test_label_outside_the_label_set(tmp_path, cache_dir):
    result = run_cli(
        "train",
        str(CONFIGS / "tiny.yaml"),
        *tiny_overrides(tmp_path, cache_dir),
        "data.label_names=[sadness,joy,love,anger,fear]",
    )
    assert_one_line_error(result, "label 'surprise'", "row", "data.label_names")


def test_check_validates_without_training(tmp_path):
    result = run_cli("check", str(CONFIGS / "emotion.yaml"), "train.epochs=1")
    assert result.returncode == 0 and "epochs: 1" in result.stdout
    assert_one_line_error(run_cli("check", str(tmp_path / "nope.yaml")), "nope.yaml", "does not exist")


def test_predict_with_a_missing_model(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("hello\n")
    result = run_cli("predict", "--model", str(tmp_path / "none"), "--input", str(source))
    assert_one_line_error(result, str(tmp_path / "none"))


def test_a_closed_pipe_is_not_an_error(tmp_path, monkeypatch, capsys):
    """`ptrain check CONFIG | head -1`: the reader has gone when ptrain writes; exit 0, no traceback."""
    from ptrain.cli import main

    class ClosedPipe:
        def __init__(self, path):
            self.handle = open(path, "w")

        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return self.handle.fileno()

    monkeypatch.setattr("sys.stdout", ClosedPipe(tmp_path / "stdout"))
    assert main(["check", str(CONFIGS / "emotion.yaml")]) == 0
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_the_tests_forked_cli_calls_match_a_fresh_interpreter(tmp_path, monkeypatch):
    """run_cli forks most calls from a server that imported ptrain once (tests/cli_server.py); what they print and
    return must be what `python -m ptrain` in a new interpreter prints and returns."""
    call = ("check", str(CONFIGS / "tiny.yaml"), "train.epochs=1", f"output_dir={tmp_path}")
    forked = run_cli(*call)
    monkeypatch.setenv("PTRAIN_TEST_FORK", "0")
    fresh = run_cli(*call)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert forked.returncode == 0 and "epochs: 1" in forked.stdout and "is valid" in forked.stderr
