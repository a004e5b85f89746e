"""A train.callbacks class for tests/test_engines.py and .ci/gpu_checks.sh: where PTRAIN_TEST_KILL_AT_STEP is set,
process 0 sends itself PTRAIN_TEST_KILL_SIGNAL (KILL by default: no handler runs, nothing is flushed; TERM: a
preemption) right after that optimizer step, before any checkpoint of the step."""

import os
import signal


class KillAtStep:
    def on_step_end(self, view):
        step = os.environ.get("PTRAIN_TEST_KILL_AT_STEP")
        if step and view.step == int(step) and view.is_main_process:
            os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get("PTRAIN_TEST_KILL_SIGNAL", "KILL")))
