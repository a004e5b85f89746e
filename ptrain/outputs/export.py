"""The export of a trained model: save_pretrained of the unwrapped model and its tokenizer, swapped in atomically. A
LoRA model (peft) is exported merged, as the plain model pipeline() loads, and its adapter alone beside it."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from ptrain.model.lora import is_peft_model
from ptrain.outputs.atomic import swap_folder


def export_model(accelerator, model, tokenizer, out_dir: Path, adapter_dir: Path | None = None) -> None:
    """save_pretrained of the unwrapped model, its tokenizer and label maps: pipeline() loads the folder. A LoRA
    model is saved merged (merge_and_unload of a copy: the trained model keeps its adapters and its weights); with
    `adapter_dir`, its adapters and trained head alone (peft's save_pretrained) go there too.

    Every process must call this: get_state_dict gathers shards under FSDP and ZeRO-3.
    """
    unwrapped = accelerator.unwrap_model(model)
    if is_peft_model(unwrapped):  # whole weights on every process: LoRA refuses sharded launches
        if accelerator.is_main_process:
            save_folder(copy.deepcopy(unwrapped).merge_and_unload(), tokenizer, out_dir)
            if adapter_dir is not None:
                save_folder(unwrapped, tokenizer, adapter_dir)
    else:
        state_dict = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            save_folder(unwrapped, tokenizer, out_dir, state_dict=state_dict)
    accelerator.wait_for_everyone()


def save_folder(model, tokenizer, out_dir: Path, **save_options) -> None:
    """save_pretrained of the model and the tokenizer into out_dir.tmp, then swapped in for out_dir."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, **save_options)
    tokenizer.save_pretrained(tmp)
    swap_folder(tmp, out_dir)
