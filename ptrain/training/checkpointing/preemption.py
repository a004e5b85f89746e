"""SIGTERM/SIGINT ask the loop to stop after the current optimizer step, write a checkpoint and exit. Processes agree
through the step's verdict (step_verdict.py): one process signalled stops them all after the same step."""

from __future__ import annotations

import signal

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
