"""Collators: pad each batch to its longest sequence (to a multiple of 8 under mixed precision)."""

from transformers import DataCollatorWithPadding

# Tensor cores and bf16 CPU kernels prefer sequence lengths that are multiples of 8.
MIXED_PRECISION_PAD_MULTIPLE = 8


def classification_collator(tokenizer, mixed_precision: str) -> DataCollatorWithPadding:
    multiple = MIXED_PRECISION_PAD_MULTIPLE if mixed_precision != "no" else None
    return DataCollatorWithPadding(tokenizer, padding="longest", pad_to_multiple_of=multiple)
