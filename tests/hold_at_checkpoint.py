"""A train.callbacks class for tests/test_two_nodes.py: where PTRAIN_TEST_HOLD_FILE is set (the launch of the
node to kill or freeze), the process writes its pid there after the first checkpoint, then holds still, so the
test stops that node at a known step."""

import os
import time
from pathlib import Path


class HoldAtCheckpoint:
    def on_checkpoint(self, view):
        hold_file = os.environ.get("PTRAIN_TEST_HOLD_FILE")
        if hold_file:
            Path(hold_file).write_text(str(os.getpid()))
            time.sleep(600)  # the test kills or stops this process long before
