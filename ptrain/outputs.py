"""Run folders and exports: written atomically (temporary name, then rename) so nothing is left half-done."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from accelerate.utils import broadcast_object_list

from ptrain.errors import ConfigError


def create_run_dir(accelerator, output_dir: str, name: str) -> Path:
    """runs/<name>/<timestamp>/, made by the main process; every process gets the same path."""
    path = [None]
    if accelerator.is_main_process:
        base = Path(output_dir) / name
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir, n = base / stamp, 1
        while run_dir.exists():
            n += 1
            run_dir = base / f"{stamp}-{n}"
        try:
            run_dir.mkdir(parents=True)
        except OSError as err:
            raise ConfigError(f"output_dir {output_dir}: cannot create {run_dir} ({err.strerror})") from None
        path = [str(run_dir)]
    if accelerator.num_processes > 1:
        broadcast_object_list(path)
    return Path(path[0])


def export_model(accelerator, model, tokenizer, out_dir: Path) -> None:
    """save_pretrained of the unwrapped model, its tokenizer and label maps: pipeline() loads the folder.

    Every process must call this: get_state_dict gathers shards under FSDP and ZeRO-3.
    """
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        _replace(tmp, out_dir)
    accelerator.wait_for_everyone()


def write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _replace(tmp: Path, out_dir: Path) -> None:
    """Swap a finished folder in; the old one goes only after the new one is complete."""
    old = out_dir.with_name(out_dir.name + ".old")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
