"""The evaluation pass shared by the text-head tasks: every example once, per-example outputs gathered from all
processes, real tokens counted."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


@torch.no_grad()
def gather_outputs(
    model, loader, accelerator, outputs: Callable[[torch.Tensor, torch.Tensor], dict]
) -> tuple[dict, int, float]:
    """outputs(fp32 logits, labels) -> per-example tensors; returns them concatenated over the split with the
    `labels` and `rows` (raw-split index), the real tokens of all processes, and the seconds taken.
    gather_for_metrics drops the samples added to even out the last batch."""
    start, was_training = time.perf_counter(), model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    real_tokens = torch.zeros((), device=accelerator.device)
    for batch in loader:
        labels, rows = batch.pop("labels"), batch.pop("idx")
        logits = model(**batch).logits.float()
        real_tokens += batch["attention_mask"].sum()
        values = {**outputs(logits, labels), "labels": labels, "rows": rows}
        gathered = accelerator.gather_for_metrics(tuple(values.values()))
        for key, value in zip(values, gathered):
            parts.setdefault(key, []).append(value.cpu())
    model.train(was_training)
    tokens = int(accelerator.reduce(real_tokens, "sum").item())
    return {key: torch.cat(values) for key, values in parts.items()}, tokens, time.perf_counter() - start
