"""What masked and causal language modelling share: perplexity over a split (with the token loss of loss.py);
packing into blocks is ptrain/tasks/packing.py."""

from __future__ import annotations

import math
import time

import torch

from ptrain.tasks.base import EvalResult
from ptrain.tasks.loss import TokenLoss


@torch.no_grad()
def perplexity(model, loader, accelerator, loss: TokenLoss) -> tuple[dict[str, float], int, float]:
    """exp(summed cross entropy / target tokens) over the split, every example counted once on all processes
    (gather_for_metrics drops the rows repeated to even out the last batch). Logits live one batch at a time."""
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64)
    total_targets, real_tokens = 0, torch.zeros((), device=accelerator.device)
    for batch in loader:
        labels, _ = batch.pop("labels"), batch.pop("idx")
        real_tokens += batch["attention_mask"].sum()
        sums, counts = accelerator.gather_for_metrics(loss.per_example(model(**batch).logits, labels))
        total_loss += sums.double().sum().cpu()
        total_targets += int(counts.sum())
    model.train(was_training)
    mean = total_loss.item() / max(total_targets, 1)
    metrics = {"perplexity": math.exp(min(mean, 700.0)), "loss": mean}  # loss: mean cross entropy per target, nats
    tokens = int(accelerator.reduce(real_tokens, "sum").item())
    return metrics, tokens, time.perf_counter() - start


def perplexity_result(model, loader, accelerator, loss: TokenLoss, details=None) -> EvalResult:
    metrics, tokens, seconds = perplexity(model, loader, accelerator, loss)
    return EvalResult(metrics, tokens, seconds, details)
