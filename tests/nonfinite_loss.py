"""A train.loss for tests/test_precision.py: cross entropy summed over the batch, infinite at the micro-batch that
PTRAIN_TEST_INF_AT_CALL names (counted from 1 in each process), so that one optimizer step has a non-finite loss."""

import os

import torch
import torch.nn.functional as F


class InfiniteOnce(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = F.cross_entropy(logits, labels, reduction="sum")
        return loss * float("inf") if self.calls == int(os.environ.get("PTRAIN_TEST_INF_AT_CALL", "0")) else loss
