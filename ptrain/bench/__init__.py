"""`ptrain bench`: throughput and time to a score, side by side with the HF Trainer; the hardware and its peak."""
