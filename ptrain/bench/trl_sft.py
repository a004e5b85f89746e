"""The TRL side of `ptrain bench --compare-trl`: TRL's SFTTrainer on ptrain's chat job (the same conversations,
token ids and labels, initial weights, max length, batch, optimizer, precision and seed). Two settings: `default`
keeps SFTConfig's defaults (one conversation per row, random batches padded to the longest: ptrain's
data.group_by_length is not passed on); `packed` is TRL's best on any
device: best-fit-decreasing packing, which makes its batches padding-free (one flattened row, position_ids restart
at each conversation, no attention mask). TRL is a benchmark dependency only (the `bench` extra)."""

from __future__ import annotations

import contextlib
import io
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ptrain.bench.hf_trainer import training_arguments
from ptrain.errors import ConfigError
from ptrain.runtime.hardware import PeakMemory
from ptrain.tasks.loss import IGNORE_INDEX
from ptrain.training.recipe import load_model
from ptrain.training.run import Run

SETTINGS = {
    # SFTConfig's defaults: packing=False, padding_free=False, random batches (train_sampling_strategy), each row one
    # conversation padded to the batch's longest
    "default": {"train_sampling_strategy": "random"},
    "packed": {"packing": True, "packing_strategy": "bfd", "padding_free": True},  # bfd implies padding_free
}
TRL_SIDES = tuple(f"trl_{name}" for name in SETTINGS)


def check_trl_options(cfg, compare_trl: bool, loss_check: bool, time_to: str | None) -> None:
    """--compare-trl is for chat configs, with TRL installed; --loss-check comes with it. Refused in one line,
    before any work."""
    if loss_check and not compare_trl:
        raise ConfigError("--loss-check compares ptrain's validation loss with TRL's: add --compare-trl")
    if not compare_trl:
        return
    if time_to:
        raise ConfigError("--compare-trl times training steps; it does not combine with --time-to")
    if cfg.task != "chat":
        raise ConfigError(
            f"--compare-trl compares chat fine-tuning with TRL's SFTTrainer; {cfg.name} is a {cfg.task} config"
        )
    try:
        import trl  # noqa: F401
    except ImportError:
        raise ConfigError("--compare-trl needs TRL: pip install 'ptrain[bench]'") from None


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state dict: the initial weights every side starts from."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def conversations(rows) -> dict[str, list[list[int]]]:
    """ptrain's tokenized chat rows split back into conversations (position_ids restart at 0 at each one, packed or
    not): input_ids and TRL's assistant_masks column, 1 where ptrain's labels train the token. TRL rebuilds the
    labels from it (input_ids where the mask is 1, -100 elsewhere), so both sides train on the same targets."""
    out = {"input_ids": [], "assistant_masks": []}
    for ids, labels, positions in zip(rows["input_ids"], rows["labels"], rows["position_ids"]):
        starts = [i for i, position in enumerate(positions) if position == 0] + [len(ids)]
        for start, end in zip(starts, starts[1:]):
            out["input_ids"].append(ids[start:end])
            out["assistant_masks"].append([int(label != IGNORE_INDEX) for label in labels[start:end]])
    return out


class TokenCounter:
    """Wraps TRL's collator: per batch, its rows, real tokens (the examples' own), slots (input_ids' size, padding
    included) and labelled tokens (labels other than -100)."""

    def __init__(self, collator):
        self.collator, self.batches = collator, []

    def __call__(self, features):
        batch = self.collator(features)
        real = sum(len(feature["input_ids"]) for feature in features)
        labelled = int((batch["labels"] != IGNORE_INDEX).sum())
        self.batches.append((len(features), real, batch["input_ids"].numel(), labelled))
        return batch

    def totals(self, first: int = 0, end: int | None = None) -> dict[str, int]:
        rows, real, slots, labelled = (sum(column) for column in zip(*self.batches[first:end]))
        return {"rows": rows, "real_tokens": real, "slots": slots, "labelled_tokens": labelled}


def sft_trainer(run: Run, weights: dict, output_dir: Path, settings: str, callbacks=(), **arguments):
    """An SFTTrainer on the run's training conversations from `weights`, in `settings`; its collator counted."""
    from datasets import Dataset
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from trl import SFTConfig, SFTTrainer

    cfg, data = run.cfg, run.data
    model = load_model(cfg, run.task, data)  # with model.lora, the same adapters as ptrain's side
    model.load_state_dict(weights)
    args = training_arguments(
        cfg, output_dir, SFTConfig, max_length=cfg.data.max_length, **SETTINGS[settings], **arguments
    )
    bars_were_on = not are_progress_bars_disabled()
    disable_progress_bars()  # TRL's preparation maps: a bar each, on top of the bench's own progress
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_dict(conversations(data.splits.tokenized["train"])),
            processing_class=data.tokenizer,
            callbacks=list(callbacks),
        )
    if bars_were_on:
        enable_progress_bars()
    # after construction: with padding_free, SFTTrainer refuses a collator of the caller's
    trainer.data_collator = counter = TokenCounter(trainer.data_collator)
    return trainer, counter


def time_trl(run: Run, weights: dict, steps: int, warmup_steps: int, output_dir: Path, settings: str) -> dict:
    """SFTTrainer.train for warmup_steps + steps optimizer steps; the timed ones are the last `steps`, their
    batches (warmup_steps x accumulation onwards, in the order the collator built them) counted."""
    from transformers import TrainerCallback

    clock: dict[int, float] = {}
    progress = tqdm(total=warmup_steps + steps, desc=f"TRL {settings}", file=sys.stderr, mininterval=2, leave=False)

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock[0] = time.perf_counter()  # the timed interval's start when there is no warm-up

        def on_step_end(self, args, state, control, **kwargs):
            progress.update()
            if state.global_step in (warmup_steps, warmup_steps + steps):
                clock[state.global_step] = time.perf_counter()

    trainer, counter = sft_trainer(run, weights, output_dir, settings, [Clock()], max_steps=warmup_steps + steps)
    with PeakMemory(run.runtime.accelerator.device) as memory, contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    progress.close()
    micro_steps = run.cfg.train.gradient_accumulation_steps
    counts = counter.totals(warmup_steps * micro_steps, (warmup_steps + steps) * micro_steps)
    seconds = clock[warmup_steps + steps] - clock[warmup_steps]
    return {
        "tokens_per_second": counts["real_tokens"] / seconds,
        "labelled_tokens_per_second": counts["labelled_tokens"] / seconds,
        "samples_per_second": counts["rows"] / seconds,
        "padding_fraction": 1 - counts["real_tokens"] / max(counts["slots"], 1),
        **memory.report(),
    }
