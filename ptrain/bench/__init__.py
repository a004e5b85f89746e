"""`ptrain bench`: throughput and time to a score, side by side with the HF Trainer, against the hardware's
measured peak (runtime/hardware.py)."""
