"""What a run leaves for its users: run folders, exports that `pipeline()` loads, the model card, tracking
(TensorBoard and metrics.jsonl)."""
