"""Collators: pad each batch to its longest sequence (to a multiple of 8 for mixed precision on a GPU)."""

import torch
from transformers import DataCollatorWithPadding

# Tensor cores want sequence lengths that are multiples of 8. On CPU the rule only adds padding: on emotion
# it took padding from 3% to 16% for no throughput gain (ptrain bench, bf16, 2 cores).
GPU_MIXED_PRECISION_PAD_MULTIPLE = 8


def pad_multiple(mixed_precision: str, device: torch.device) -> int | None:
    return GPU_MIXED_PRECISION_PAD_MULTIPLE if mixed_precision != "no" and device.type == "cuda" else None


def padding_collator(tokenizer, mixed_precision: str, device: torch.device) -> DataCollatorWithPadding:
    return DataCollatorWithPadding(
        tokenizer, padding="longest", pad_to_multiple_of=pad_multiple(mixed_precision, device)
    )


TOKEN_MASK = "token_mask"  # real tokens of a batch with no attention mask (PositionsCollator)


class PositionsCollator:
    """Rows of one or more examples (input_ids, labels, position_ids, idx) padded to the batch's longest row, with
    no attention mask: transformers' models then derive attention from position_ids, causal within each example and
    never across (a position that does not follow its predecessor starts a new example). The padding gets positions
    0, 1, ... of its own, so it is an example of its own too, with labels -100. The batch asks the model for no KV
    cache (use_cache=False): with one (Llama's default, in training too) transformers ignores the boundaries and
    every token attends to the examples before it in its row. Same batch every call."""

    same_every_call = True

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id, self.multiple = pad_token_id, pad_to_multiple_of

    def __call__(self, rows: list[dict]) -> dict:
        longest = max(len(row["input_ids"]) for row in rows)
        if self.multiple:
            longest = -(-longest // self.multiple) * self.multiple
        batch = {"input_ids": [], "labels": [], "position_ids": []}
        for row in rows:
            pad = longest - len(row["input_ids"])
            batch["input_ids"].append(list(row["input_ids"]) + [self.pad_token_id] * pad)
            batch["labels"].append(list(row["labels"]) + [-100] * pad)
            batch["position_ids"].append(list(row["position_ids"]) + list(range(pad)))
        out = {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}
        out["idx"] = torch.tensor([row["idx"] for row in rows], dtype=torch.long)
        out[TOKEN_MASK] = (torch.arange(longest) < torch.tensor([[len(row["input_ids"])] for row in rows])).long()
        out["use_cache"] = False  # transformers reads position_ids as example boundaries only without a KV cache
        return out


def pop_token_mask(batch: dict) -> torch.Tensor:
    """1 on the batch's real tokens, 0 on padding: the attention mask, or for a batch without one (rows of several
    examples, attention from position_ids) the mask its collator set aside, taken out so the model never sees it."""
    return batch.pop(TOKEN_MASK) if TOKEN_MASK in batch else batch["attention_mask"]
