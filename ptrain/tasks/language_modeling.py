"""What masked and causal language modelling share: packing texts into blocks and perplexity over a split
(with the token loss of loss.py)."""

from __future__ import annotations

import math

import torch

from ptrain.tasks.base import EvalResult
from ptrain.tasks.gather import evaluation_pass
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
