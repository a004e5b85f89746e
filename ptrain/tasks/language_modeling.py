"""What masked and causal language modelling share: perplexity over a split (with the token loss of loss.py);
packing into blocks is ptrain/tasks/packing.py."""

from __future__ import annotations

import math

import torch

from ptrain.tasks.base import EvalResult
from ptrain.tasks.gather import evaluation_pass
from ptrain.tasks.loss import TokenLoss


@torch.no_grad()
def perplexity(model, loader, accelerator, loss: TokenLoss) -> tuple[dict[str, float], int, float]:
    """exp(summed cross entropy / target tokens) over the split, every example counted once on all processes
    (evaluation_pass). Logits live one batch at a time; only each row's loss sum and target count are kept."""

    def per_batch(batch: dict, labels: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        sums, counts = loss.per_example(model(**batch).logits, labels)
        return {"sums": sums, "counts": counts}

    parts, tokens, seconds = evaluation_pass(model, loader, accelerator, per_batch)
    total_loss = torch.zeros((), dtype=torch.float64)
    for sums in parts.get("sums", []):
        total_loss += sums.double().sum()
    total_targets = sum(int(counts.sum()) for counts in parts.get("counts", []))
    mean = total_loss.item() / max(total_targets, 1)
    metrics = {"perplexity": math.exp(min(mean, 700.0)), "loss": mean}  # loss: mean cross entropy per target, nats
    return metrics, tokens, seconds


def perplexity_result(model, loader, accelerator, loss: TokenLoss, details=None) -> EvalResult:
    metrics, tokens, seconds = perplexity(model, loader, accelerator, loss)
    return EvalResult(metrics, tokens, seconds, details)
