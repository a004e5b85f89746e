"""What a run leaves on disk: run folders, atomic writes, exports, TensorBoard tracking."""
