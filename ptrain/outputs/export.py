"""The export of a trained model: save_pretrained of the unwrapped model and its tokenizer, swapped in atomically."""

from __future__ import annotations

import shutil
from pathlib import Path

from ptrain.outputs.atomic import swap_folder


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
        swap_folder(tmp, out_dir)
    accelerator.wait_for_everyone()
