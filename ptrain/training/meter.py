"""Training statistics between log points, kept on the device and read (one host sync) only when logged."""

from __future__ import annotations

import time

import torch


class TrainMeter:
    def __init__(self, device: torch.device):
        self.device = device
        self.window_loss = torch.zeros((), device=device)  # summed loss of the current window, this process
        self.source_tokens: torch.Tensor | None = None  # data.mixture: real tokens per source since the last take
        self._reset()

    def _reset(self) -> None:
        zero = lambda: torch.zeros((), device=self.device)  # noqa: E731
        self.loss_sum, self.target_weight = zero(), zero()
        self.real_tokens, self.token_slots, self.samples = zero(), zero(), zero()
        self.grad_norm_sum, self.steps = zero(), 0
        self.start = time.perf_counter()
        self.excluded_seconds = 0.0  # evaluation time inside the interval

    def add_micro_batch(
        self, loss_sum: torch.Tensor, attention_mask: torch.Tensor, sources: torch.Tensor | None = None
    ):
        """`sources`: a mixture batch's rows one-hot by source ([rows, sources]), whose real tokens are counted."""
        self.window_loss += loss_sum
        self.real_tokens += attention_mask.sum()
        self.token_slots += attention_mask.numel()
        self.samples += attention_mask.shape[0]
        if sources is not None:
            counted = (sources * attention_mask.sum(dim=1, keepdim=True)).sum(dim=0)
            self.source_tokens = counted if self.source_tokens is None else self.source_tokens + counted

    def take_source_tokens(self, accelerator) -> list[int] | None:
        """Each mixture source's real tokens since the last take, summed over processes (exact: int64), and the
        count started again; None without a mixture. Taken at every checkpoint (source_tokens.py), so a checkpoint
        holds none of them."""
        if self.source_tokens is None:
            return None
        tokens = accelerator.reduce(self.source_tokens, "sum").tolist()
        self.source_tokens = torch.zeros_like(self.source_tokens)
        return tokens

    def end_window(self, global_target_weight: torch.Tensor, grad_norm: torch.Tensor | None, skipped: bool) -> None:
        """Count the window in the interval, unless its step was skipped for a non-finite value."""
        if not skipped:
            self.loss_sum += self.window_loss
            self.target_weight += global_target_weight
            if grad_norm is not None:
                self.grad_norm_sum += grad_norm.float()
            self.steps += 1
        self.window_loss.zero_()

    def exclude(self, seconds: float) -> None:
        self.excluded_seconds += seconds

    def state_dict(self) -> dict:
        """The open interval's sums (exact float32 values), so a resumed run logs the same loss."""
        names = ("loss_sum", "target_weight", "real_tokens", "token_slots", "samples", "grad_norm_sum")
        return {**{name: getattr(self, name).item() for name in names}, "steps": self.steps}

    def load_state_dict(self, values: dict) -> None:
        for name, value in values.items():
            if name == "steps":
                self.steps = value
            else:
                setattr(self, name, torch.tensor(value, dtype=torch.float32, device=self.device))

    def read(self, accelerator) -> dict[str, float]:
        """Interval averages over all processes (no loss and grad_norm when every step was skipped); resets the
        interval."""
        local = torch.stack([self.loss_sum, self.real_tokens, self.token_slots, self.samples])
        loss_sum, real_tokens, token_slots, samples = accelerator.reduce(local, "sum").tolist()
        seconds = max(time.perf_counter() - self.start - self.excluded_seconds, 1e-9)
        stats = {
            "tokens_per_second": real_tokens / seconds,
            "samples_per_second": samples / seconds,
            "padding_fraction": 1.0 - real_tokens / max(token_slots, 1),
        }
        if self.steps:  # none when every step of the interval was skipped (non-finite): nothing to average
            stats["loss"] = loss_sum / max(self.target_weight.item(), 1e-12)
            stats["grad_norm"] = self.grad_norm_sum.item() / self.steps
        self._reset()
        return stats
