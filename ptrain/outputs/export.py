"""The export of a trained model: save_pretrained of the unwrapped model and its tokenizer, with a manifest of its
files, swapped in atomically. A LoRA model (peft) is exported merged, as the plain model pipeline() loads, and its
adapter alone beside it. A failed write (a full disk) leaves the previous export in place."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path

from torch.distributed.tensor import DTensor

from ptrain.errors import OutputError
from ptrain.files.atomic import WRITE_ERRORS, swap_folder, write_failed
from ptrain.files.integrity import write_export_manifest
from ptrain.model.lora import is_peft_model, whole_twin
from ptrain.runtime.agreement import raise_if_any_failed


def export_model(accelerator, model, tokenizer, out_dir: Path, adapter_dir: Path | None = None) -> None:
    """save_pretrained of the unwrapped model, its tokenizer and label maps: pipeline() loads the folder. A LoRA
    model is saved merged (merge_and_unload of a copy: the trained model keeps its adapters and its weights); with
    `adapter_dir`, its adapters and trained head alone (peft's save_pretrained) go there too.

    Every process must call this: get_state_dict gathers shards under FSDP and ZeRO-3. A write that fails raises
    the same OutputError on every process.
    """
    unwrapped, error = accelerator.unwrap_model(model), None
    try:
        if is_peft_model(unwrapped):
            export_lora(accelerator, model, tokenizer, out_dir, adapter_dir)
        else:
            state_dict = accelerator.get_state_dict(model)
            if accelerator.is_main_process:
                save_folder(unwrapped, tokenizer, out_dir, state_dict=state_dict)
    except OutputError as err:
        error = err
    raise_if_any_failed(accelerator, error)  # in place of a barrier: no process waits for one that failed


def export_lora(accelerator, model, tokenizer, out_dir: Path, adapter_dir: Path | None) -> None:
    """The merged plain model into out_dir and the adapters alone into adapter_dir, from the main process. With its
    weights sharded (FSDP2), the whole weights are gathered onto the main process first (every process takes part)
    and the merge runs on a twin that holds them."""
    unwrapped = accelerator.unwrap_model(model)
    sharded = any(isinstance(param, DTensor) for param in unwrapped.parameters())
    state_dict = accelerator.get_state_dict(model) if sharded else None  # a collective: before the main-only part
    if not accelerator.is_main_process:
        return
    whole = whole_twin(unwrapped, state_dict) if sharded else unwrapped
    if adapter_dir is not None:
        save_folder(whole, tokenizer, adapter_dir)
    save_folder((whole if sharded else copy.deepcopy(whole)).merge_and_unload(), tokenizer, out_dir)


def save_folder(
    model, tokenizer, out_dir: Path, add_files: Callable[[Path], None] | None = None, **save_options
) -> None:
    """save_pretrained of the model and the tokenizer into out_dir.tmp (and `add_files(tmp)`, files of the caller's
    own), with its manifest (written last), then swapped in for out_dir. A failed write removes out_dir.tmp and
    raises an OutputError naming out_dir."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, **save_options)
        tokenizer.save_pretrained(tmp)
        if add_files is not None:
            add_files(tmp)
        write_export_manifest(tmp)
        swap_folder(tmp, out_dir)
    except WRITE_ERRORS as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_failed(out_dir, err) from None
