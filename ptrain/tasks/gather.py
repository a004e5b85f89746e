"""The evaluation pass every task shares: the model in eval mode, each batch once, per-example outputs gathered
from all processes (gather_for_metrics), real tokens counted and the pass timed."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ptrain.data.collate import pop_token_mask
from ptrain.fast_paths import packed_evaluation

PerBatch = Callable[[dict, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


@torch.no_grad()
def evaluation_pass(
    model, loader, accelerator, per_batch: PerBatch
) -> tuple[dict[str, list[torch.Tensor]], int, float]:
    """per_batch(batch without `labels` and `idx`, labels, rows) -> this process's per-example tensors. Returns
    them gathered from all processes, one CPU tensor per batch under each key, the real (non-pad) input tokens of
    all processes, and the seconds taken. gather_for_metrics drops the samples added to even out the last batch."""
    start, was_training = time.perf_counter(), model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    real_tokens = torch.zeros((), device=accelerator.device)
    # one context for the pass: each weight is cast to bf16/fp16 (and on the CPU packed for oneDNN) once, not per batch
    with accelerator.autocast(), packed_evaluation(model, accelerator.device):
        for batch in loader:
            labels, rows = batch.pop("labels"), batch.pop("idx")
            real_tokens += pop_token_mask(batch).sum()
            values = per_batch(batch, labels, rows)
            for key, value in zip(values, accelerator.gather_for_metrics(tuple(values.values()))):
                parts.setdefault(key, []).append(value.cpu())
    model.train(was_training)
    tokens = int(accelerator.reduce(real_tokens, "sum").item())
    return parts, tokens, time.perf_counter() - start


def gather_outputs(
    model, loader, accelerator, outputs: Callable[[torch.Tensor, torch.Tensor], dict]
) -> tuple[dict, int, float]:
    """The text-head tasks' pass: outputs(fp32 logits, labels) -> per-example tensors; returns them concatenated
    over the split with the `labels` and `rows` (raw-split index), the real tokens and the seconds taken."""

    def per_batch(batch: dict, labels: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {**outputs(model(**batch).logits.float(), labels), "labels": labels, "rows": rows}

    parts, tokens, seconds = evaluation_pass(model, loader, accelerator, per_batch)
    return {key: torch.cat(values) for key, values in parts.items()}, tokens, seconds
