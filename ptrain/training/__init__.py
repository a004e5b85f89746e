"""The training recipe and its loop: optimizer and schedule, accumulation windows, non-finite and signal guards,
EMA, callbacks, the best-model and early-stopping rule, evaluation during training, the run's report, and
checkpointing/ (checkpoints and resume); the linear probe's recipe."""
