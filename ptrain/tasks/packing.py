"""Packing texts into blocks of block_size tokens for the language-model tasks: their shared config keys, the
check against the model's positions, and the packing itself."""

from __future__ import annotations

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
