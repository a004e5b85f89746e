"""Checkpoints and resume: writing, verifying and pruning checkpoints, restoring one, resuming across nodes, and
stopping on a preemption signal with a checkpoint."""
