"""Focal loss (Lin et al., 2017) as ptrain's train.loss: (logits, labels) -> the loss summed over the batch."""

import torch
import torch.nn.functional as F


class FocalLoss(torch.nn.Module):
    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma  # 0 gives cross entropy; higher down-weights the examples already right

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        return (-((1 - log_p.exp()) ** self.gamma) * log_p).sum()
