"""A train.callbacks class for tests/test_engines.py: where PTRAIN_TEST_KILL_AT_STEP is set, process 0 kills itself
(SIGKILL: no handler runs, nothing is flushed) right after that optimizer step, before any checkpoint of the step."""

import os
import signal


class KillAtStep:
    def on_step_end(self, view):
        step = os.environ.get("PTRAIN_TEST_KILL_AT_STEP")
        if step and view.step == int(step) and view.is_main_process:
            os.kill(os.getpid(), signal.SIGKILL)
