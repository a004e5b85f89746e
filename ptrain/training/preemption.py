"""SIGTERM/SIGINT ask the loop to stop after the current optimizer step, write a checkpoint and exit."""

from __future__ import annotations

import signal

import torch

EXIT_CODES = {"SIGTERM": 143, "SIGINT": 130}  # 128 + signal number, as shells report them


class Preemption:
    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def install(self) -> Preemption:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.received == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.received = signal.Signals(signum).name

    def requested(self, accelerator) -> str | None:
        """Whether any process was signalled; all processes agree, so they stop at the same step."""
        if accelerator.num_processes == 1:
            return self.received
        flag = torch.tensor([1.0 if self.received else 0.0], device=accelerator.device)
        if accelerator.reduce(flag, "max").item() > 0:
            return self.received or "SIGTERM"
        return None
