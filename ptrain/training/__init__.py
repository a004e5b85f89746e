"""The training recipe and its loop: optimizer and schedule, precision and distributed set-up, checkpoints and
resume, signals and non-finite guards, the best-model and early-stopping rule, the run's report."""
