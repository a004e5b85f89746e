"""`ptrain check`, `ptrain runs` and `ptrain check-run` read YAML and JSON only: in a fresh interpreter they import
no torch, transformers, datasets or accelerate (about 5 s of imports), so they answer in well under a second.
Imports are tested rather than time, which a loaded machine makes flaky."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ptrain.files.integrity import manifest, write_export_manifest
from tests.conftest import CONFIGS, REPO

HEAVY = ("torch", "transformers", "datasets", "accelerate")


def imported_modules(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `python -X importtime -m ptrain ARGS` in a new interpreter (not the tests' fork server, which has the
    libraries loaded already); the result, and every module it imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ptrain", *args],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    return result, {line.rpartition("|")[2].strip() for line in lines}


def assert_no_heavy_imports(modules: set[str]) -> None:
    assert "ptrain.cli" in modules  # the listing is real
    heavy = sorted(name for name in modules if name.split(".")[0] in HEAVY)
    assert not heavy, f"imported {heavy[:10]}"


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    """A run stopped after a checkpoint at step 7 and its final export, written as training writes them (the
    manifests of ptrain/files/integrity.py); no metrics.json, so `ptrain runs` reads the checkpoint's meta.json."""
    run = tmp_path / "runs" / "tiny" / "20260101-120000"
    checkpoint = run / "checkpoints" / "step-00000007"
    checkpoint.mkdir(parents=True)
    for name in ("model.safetensors", "optimizer.bin", "scheduler.bin"):
        (checkpoint / name).write_bytes(b"tensors of " + name.encode())
    meta = {"loop": {"global_step": 7}, "engine": {"name": "single", "processes": 1}, "files": manifest(checkpoint)}
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    (checkpoint / "complete").touch()
    (run / "final").mkdir()
    (run / "final" / "config.json").write_text("{}")
    write_export_manifest(run / "final")
    (run / "config.yaml").write_text((CONFIGS / "tiny.yaml").read_text())
    return run


def test_check_imports_no_libraries():
    result, modules = imported_modules("check", str(CONFIGS / "emotion.yaml"))
    assert result.returncode == 0 and "is valid" in result.stderr, result.stderr[-3000:]
    assert_no_heavy_imports(modules)


def test_runs_and_check_run_import_no_libraries(run_folder):
    result, modules = imported_modules("runs", str(run_folder.parent.parent), "--format", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(result.stdout)["runs"]
    assert (row["status"], row["steps"]) == ("resumable", 7)
    assert_no_heavy_imports(modules)

    result, modules = imported_modules("check-run", str(run_folder))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "step-00000007: intact (step 7, single (1 process), 3 files checked)" in result.stdout
    assert f"{run_folder / 'final'}: intact" in result.stdout
    assert_no_heavy_imports(modules)
