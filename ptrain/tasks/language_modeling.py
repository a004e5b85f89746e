"""What masked and causal language modelling share: packing texts into blocks and perplexity over a split
(with the token loss of loss.py)."""

from __future__ import annotations

import math
import time

import torch

from ptrain.tasks.base import EvalResult
from ptrain.tasks.loss import TokenLoss


def pack_blocks(token_lists: list[list[int]], block_size: int, first_rows: list[int]) -> dict:
    """Concatenate the token lists and cut them into blocks of exactly block_size tokens (no padding).

    The tail shorter than a block is dropped; datasets.map calls this per batch of 1,000 rows, so under one
    block per 1,000 documents is lost. `idx` of a block is the raw row its first token comes from.
    """
    stream, origin = [], []
    for ids, row in zip(token_lists, first_rows):
        stream.extend(ids)
        origin.extend([row] * len(ids))
    usable = len(stream) - len(stream) % block_size
    blocks = [stream[start : start + block_size] for start in range(0, usable, block_size)]
    return {
        "input_ids": blocks,
        "attention_mask": [[1] * block_size for _ in blocks],
        "idx": [origin[start] for start in range(0, usable, block_size)],
    }


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
