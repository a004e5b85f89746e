"""A byte-level BPE tokenizer trained on the training split, for models built from scratch; cached on disk by
content, so every process, a resumed run and a rerun load the same vocabulary."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ptrain.files.atomic import move_folder

# Byte-level BPE has no unknown characters; <unk> is kept because some model configs expect one.
SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}
VERSION = "bpe-v1"


def cached_trained_tokenizer(options, texts: Iterable[str], data_fingerprint: str, cache_dir: Path):
    """The tokenizer trained on `texts` with `options` (model.train_tokenizer), trained only when not cached."""
    key = hashlib.sha256(f"{data_fingerprint}\x1f{options.model_dump_json()}\x1f{VERSION}".encode()).hexdigest()[:24]
    folder = cache_dir / key
    if not (folder / "tokenizer.json").is_file():
        tmp = folder.with_name(f"{key}.tmp{os.getpid()}")
        train_bpe(texts, options.vocab_size, options.min_frequency).save_pretrained(tmp)
        move_folder(tmp, folder)  # whole folder at once: a reader never sees half a tokenizer
    return AutoTokenizer.from_pretrained(folder)


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style): every string round-trips, whitespace and newlines included."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)  # character offsets without the space
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
