"""Verified checkpoints: each records the size and sha256 of its files in meta.json (exports in
ptrain-manifest.json). A truncated or bit-flipped checkpoint named in train.resume is refused in one line;
train.resume=auto skips a damaged newest one with one warning and resumes from the newest intact one; `ptrain
check-run` says which checkpoints and exports are intact; pruning never deletes the last intact checkpoint."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from ptrain.cli import main
from ptrain.training.checkpointing.checkpoint import complete_checkpoints, prune, save_checkpoint
from tests.conftest import CONFIGS, run_cli, tiny_overrides

# 96 rows, batch 32: 3 optimizer steps, a checkpoint after each, all three kept.
SETTINGS = {
    "data.max_eval_rows": "32",
    "train.epochs": "1",
    "train.checkpoint_every_steps": "1",
    "train.keep_checkpoints": "3",
}


def train(out: Path, cache: Path, *extra: str):
    return run_cli("train", str(CONFIGS / "tiny.yaml"), *tiny_overrides(out, cache, rows=96, **SETTINGS), *extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("integrity")
    result = train(out, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(data)


def truncate(path: Path) -> tuple[int, int]:
    """Cut the file in half; (new size, old size)."""
    size = path.stat().st_size
    os.truncate(path, size // 2)
    return size // 2, size


def check_run(run_dir: Path) -> tuple[int, str]:
    """`ptrain check-run RUN` (the CLI's main, in this process): exit code and output."""
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(["check-run", str(run_dir)])
    return code, out.getvalue()


@pytest.mark.slow
def test_checkpoints_and_exports_record_every_file_and_the_export_still_loads(trained):
    from transformers import pipeline

    (run_dir,) = (trained / "runs" / "tiny").iterdir()
    checkpoint = run_dir / "checkpoints" / "step-00000003"
    files = json.loads((checkpoint / "meta.json").read_text())["files"]
    assert sorted(files) == ["model.safetensors", "optimizer.bin", "random_states_0.pkl", "scheduler.bin"]
    for name, entry in files.items():
        data = (checkpoint / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    exported = json.loads((run_dir / "final" / "ptrain-manifest.json").read_text())["files"]
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= set(exported)  # the card too
    prediction = pipeline("text-classification", model=str(run_dir / "final"))("i feel so happy today")
    assert prediction[0]["label"] in {"sadness", "joy", "love", "anger", "fear", "surprise"}


@pytest.mark.slow
def test_damaged_checkpoints_are_refused_when_named_skipped_by_auto_and_reported(trained, cache_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    (run_dir,) = (out / "runs" / "tiny").iterdir()
    first, second, third = sorted((run_dir / "checkpoints").iterdir())
    flip_a_bit(third / "model.safetensors")
    cut, size = truncate(second / "optimizer.bin")
    meta = json.loads((first / "meta.json").read_text())
    del meta["files"], meta["engine"]  # as written before manifests: checked for its required files only
    (first / "meta.json").write_text(json.dumps(meta))
    flip_a_bit(run_dir / "best" / "model.safetensors")
    (run_dir / "checkpoints" / "step-00000004.tmp").mkdir()  # what a killed write leaves
    (run_dir / "metrics.json.tmp").write_text("{")

    code, report = check_run(run_dir)
    assert code == 1
    assert f"{first}: intact (step 1, written before manifests: unchecked)" in report
    assert f"{second}: damaged: optimizer.bin: {cut} bytes, expected {size}" in report
    assert f"{third}: damaged: model.safetensors: sha256 differs" in report
    assert f"{run_dir / 'best'}: damaged: model.safetensors: sha256 differs" in report
    assert f"{run_dir / 'final'}: intact" in report
    assert f"{run_dir / 'metrics.json.tmp'}: incomplete: an unfinished write" in report
    assert f"{run_dir / 'checkpoints' / 'step-00000004.tmp'}: incomplete" in report

    for named, problem in ((third, "model.safetensors: sha256 differs"), (second, f"optimizer.bin: {cut} bytes")):
        refused = train(out, cache_dir, f"train.resume={named}")
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr[-3000:]
        assert refused.stderr.startswith(f"ptrain: error: checkpoint {named} is damaged ({problem}")

    resumed = train(out, cache_dir, "train.resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    warnings = [line for line in resumed.stdout.splitlines() if line.startswith("ptrain: warning")]
    assert warnings == [
        f"ptrain: warning: checkpoint {third} is damaged (model.safetensors: sha256 differs); checkpoint {second} "
        f"is damaged (optimizer.bin: {cut} bytes, expected {size}); resuming from the older {first}"
    ]
    assert f"ptrain: resumed from {first} in" in resumed.stdout
    code, after = check_run(run_dir)  # rewritten by the resumed run: every checkpoint, best/ and final/
    assert code == 0 and ": damaged" not in after and ": incomplete" not in after, after


def test_pruning_never_deletes_the_last_intact_checkpoint(accelerator, tmp_path):
    def save(step: int, keep: int) -> Path:
        return save_checkpoint(accelerator, tmp_path, {"loop": {"global_step": step}, "meter": {}}, keep, None)

    for step in (2, 4, 6):
        save(step, keep=3)
    flip_a_bit(tmp_path / "checkpoints" / "step-00000006" / "model.safetensors")
    truncate(tmp_path / "checkpoints" / "step-00000004" / "optimizer.bin")
    prune(tmp_path, keep=1, best_step=None)  # the kept newest is damaged: the newest intact older one stays too
    assert [c.step for c in complete_checkpoints(tmp_path)] == [2, 6]
    save(3, keep=1)  # a resume from 2 writes 3: kept as written (the newest by step, 6, is damaged)
    assert [c.step for c in complete_checkpoints(tmp_path)] == [3, 6]
