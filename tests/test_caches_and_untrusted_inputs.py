"""Caches a killed or damaged write cannot poison, and inputs that stay data: no YAML tags that build objects, no
unpickling of cache files, no model code run unless model.trust_remote_code is set."""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptrain.errors import ConfigError
from ptrain.tasks import load_config
from ptrain.training.probe import read_features
from tests.conftest import CONFIGS, REPO, run_cli

# The whole emotion training split (16,000 rows): its tokenization takes long enough to be killed in the middle.
FULL_SPLIT = ["data.max_train_rows=null", "data.max_eval_rows=64", "train.max_steps=1", "train.eval_every_steps=1"]


def train_args(tmp_path: Path, cache: Path, *extra: str) -> list[str]:
    return ["train", str(CONFIGS / "tiny.yaml"), f"output_dir={tmp_path / 'runs'}", f"data.cache_dir={cache}", *extra]


def reused_splits(stdout: str) -> str:
    return re.search(r"tokenization cache reused for (\[.*?\]|none)", stdout).group(1)


def kill_during_tokenization(args: list[str], cache: Path) -> None:
    """Start `ptrain ARGS` and SIGKILL it as soon as `datasets` has a cache file open for writing."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ptrain", *args],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list(cache.glob("tmp*")):
        assert process.poll() is None, "ptrain finished before it was seen writing the tokenization cache"
        assert time.monotonic() < deadline, "no tokenization cache write seen in 120 s"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def killed_then_rerun(tmp_path_factory):
    """A training killed while writing the training split's tokenization, then the same command again."""
    tmp = tmp_path_factory.mktemp("killed")
    cache = tmp / "cache"
    kill_during_tokenization(train_args(tmp, cache, *FULL_SPLIT), cache)
    leftovers = sorted(path.name for path in cache.iterdir())
    rerun = run_cli(*train_args(tmp, cache, *FULL_SPLIT))
    return tmp, cache, leftovers, rerun


@pytest.mark.slow
def test_a_killed_tokenization_write_leaves_no_cache_entry(killed_then_rerun):
    _, _, leftovers, rerun = killed_then_rerun
    assert not [name for name in leftovers if name.endswith(".arrow")], leftovers  # only datasets' tmp file
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert reused_splits(rerun.stdout) == "none"  # the half-written split was tokenized again, not read


@pytest.mark.slow
def test_a_damaged_cache_entry_is_tokenized_again(killed_then_rerun):
    tmp, cache, _, _ = killed_then_rerun
    entry = max(cache.glob("*.arrow"), key=lambda path: path.stat().st_size)  # the training split's
    with open(entry, "r+b") as handle:
        handle.truncate(entry.stat().st_size // 2)
    result = run_cli(*train_args(tmp, cache, *FULL_SPLIT))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ptrain: warning: tokenization cache {entry} is unreadable" in result.stderr
    assert "'train'" not in reused_splits(result.stdout)


class Payload:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_yaml_tags_that_build_objects_are_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    config.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match=re.escape(str(config))):
        load_config(config)
    assert not marker.exists()


def test_a_pickle_in_the_feature_cache_is_never_unpickled(tmp_path, capsys):
    marker, entry = tmp_path / "ran", tmp_path / "features-0123.safetensors"
    entry.write_bytes(pickle.dumps(Payload(marker)))
    assert read_features(entry) is None  # encoded again instead
    assert "is unreadable" in capsys.readouterr().err
    assert not marker.exists()


def test_model_code_in_a_model_folder_runs_only_with_trust_remote_code(tmp_path):
    folder, marker = tmp_path / "model", tmp_path / "model" / "ran"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert", "auto_map": {"AutoConfig": "custom.Config"}}')
    (folder / "custom.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    overrides = ["model.scratch_config=null", f"model.name_or_path={folder}"]
    with pytest.raises(ConfigError, match=r"names its own code \(custom.Config\).*model.trust_remote_code=true"):
        load_config(CONFIGS / "tiny.yaml", overrides)  # refused with the config, before any run folder exists
    assert not marker.exists()
    load_config(CONFIGS / "tiny.yaml", [*overrides, "model.trust_remote_code=true"])  # the user's explicit choice
