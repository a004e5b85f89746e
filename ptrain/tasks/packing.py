"""Packing for the language-model tasks: texts into blocks of block_size tokens (their shared config keys, the check
against the model's positions, the packing itself), and whole examples into rows that keep them apart (chat)."""

from __future__ import annotations

import bisect
from pathlib import Path

from pydantic import Field

from ptrain.config import Strict
from ptrain.errors import ConfigError


class PackingOptions(Strict):
    packing: bool = Field(
        False,
        description="Concatenate the texts and cut them into blocks of block_size tokens (no padding); without it "
        "each text is one row, truncated at data.max_length.",
    )
    block_size: int = Field(128, gt=1, description="Tokens per packed block; at most the model's positions.")


PACKING_MOVED_KEYS = {"data.packing": "packing", "data.block_size": "block_size"}


def check_block_size(cfg, options: PackingOptions, path: Path) -> None:
    """Packed blocks must fit the scratch model's positions."""
    scratch = cfg.model.scratch_config or {}
    positions = scratch.get("n_positions") or scratch.get("max_position_embeddings")
    if options.packing and positions is not None and options.block_size > positions:
        raise ConfigError(
            f"{path}: {cfg.task}.block_size {options.block_size} exceeds the model's {positions} positions "
            f"(model.scratch_config); lower {cfg.task}.block_size"
        )


def pack_blocks(token_lists: list[list[int]], block_size: int, first_rows: list[int]) -> dict:
    """Concatenate the token lists and cut them into blocks of exactly block_size tokens (no padding).

    The tail shorter than a block is dropped; datasets.map calls this per batch of 1,000 rows, so under one
    block per 1,000 documents is lost. `idx` of a block is the raw row its first token comes from.
    """
    stream, origin = [], []
    for ids, row in zip(token_lists, first_rows):
        stream.extend(ids)
        origin.extend([row] * len(ids))
    usable = len(stream) - len(stream) % block_size
    blocks = [stream[start : start + block_size] for start in range(0, usable, block_size)]
    return {
        "input_ids": blocks,
        "attention_mask": [[1] * block_size for _ in blocks],
        "idx": [origin[start] for start in range(0, usable, block_size)],
    }


def pack_examples(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: each example, longest first, goes into the row with the least room that still holds it
    (a new row when none has room). Returns the examples' positions per row; deterministic for the same lengths."""
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, row), sorted
    for position in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        size = lengths[position]
        slot = bisect.bisect_left(free, (size, -1))
        if slot < len(free):
            room, row = free.pop(slot)
        else:
            room, row = capacity, len(rows)
            rows.append([])
        rows[row].append(position)
        bisect.insort(free, (room - size, row))
    return rows


def packed_rows(examples: dict, capacity: int) -> dict:
    """Examples (input_ids, labels, idx lists) joined into rows of at most `capacity` tokens with position_ids
    restarting at each example: the attention of transformers' models (masking_utils; flash attention's varlen
    path on CUDA) then keeps each example to itself. A row's idx is its first example's; `examples` counts them."""
    out = {"input_ids": [], "labels": [], "position_ids": [], "idx": [], "examples": []}
    for members in pack_examples([len(ids) for ids in examples["input_ids"]], capacity):
        out["input_ids"].append([t for m in members for t in examples["input_ids"][m]])
        out["labels"].append([t for m in members for t in examples["labels"][m]])
        out["position_ids"].append([p for m in members for p in range(len(examples["input_ids"][m]))])
        out["idx"].append(examples["idx"][members[0]])
        out["examples"].append(len(members))
    return out
