"""`python -m ptrain` and `accelerate launch -m ptrain` enter here. A launched process (one of several: torchrun,
`accelerate launch`, mpirun) ends with os._exit once its output is flushed: the process-group objects Python still
references are otherwise destroyed during interpreter finalization, where one was seen to abort a finished process
("terminate called without an active exception", exit -6, no Python frame left) in about 1 of 30 two-process runs,
after all its work and output; the launcher then reports the run as failed."""

import logging
import os
import sys

from ptrain.cli import main

if __name__ == "__main__":
    code = main()
    # Imported by every command that joins a process group; the others (check, runs, ...) have none to leave.
    distributed = sys.modules.get("ptrain.runtime.distributed")
    if distributed is not None and distributed.launched_world_size(os.environ) > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
