"""Tokenizer and model: from a folder, a Hub id, an installed model package, or a random scratch config."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel

from ptrain.config.references import load_reference
from ptrain.config.sources import resolve_model_path
from ptrain.errors import ModelError
from ptrain.model.quantization import quantization_options
from ptrain.model.tokenizer_training import cached_trained_tokenizer

DEFAULT_TOKENIZER_CACHE = Path("~/.cache/ptrain/tokenizers")


def load_tokenizer(cfg, task=None, train=None):
    """model.tokenizer (or the model's own); with model.train_tokenizer, BPE trained on the `train` split's texts."""
    if cfg.model.train_tokenizer is not None:
        cache = Path(cfg.data.cache_dir).expanduser() / "tokenizers" if cfg.data.cache_dir else DEFAULT_TOKENIZER_CACHE
        texts = task.tokenizer_texts(cfg, train)
        return cached_trained_tokenizer(cfg.model.train_tokenizer, texts, train._fingerprint, cache.expanduser())
    name = cfg.model.tokenizer or cfg.model.name_or_path
    return AutoTokenizer.from_pretrained(resolve_model_path(name), trust_remote_code=cfg.model.trust_remote_code)


def from_config_or_pretrained(cfg, auto_class, tokenizer=None, **config_kwargs):
    """auto_class (an AutoModelFor...) from model.name_or_path, or with random weights from model.scratch_config;
    config_kwargs (label maps, problem_type) go into the model config. A scratch model takes its vocabulary size
    and special-token ids from the tokenizer unless scratch_config sets them."""
    if cfg.model.scratch_config is not None:
        given = {key: value for key, value in cfg.model.scratch_config.items() if value is not None}  # null: unset
        options = {**tokenizer_ids(tokenizer), **given}
        config = AutoConfig.for_model(options.pop("model_type"), **options, **config_kwargs)
        if tokenizer is not None and config.vocab_size < len(tokenizer):
            raise ModelError(
                f"model.scratch_config vocab_size {config.vocab_size} is smaller than the tokenizer's "
                f"{len(tokenizer)} tokens; raise it or leave it out (the tokenizer's size is used)"
            )
        return auto_class.from_config(config, attn_implementation=cfg.model.attention, dtype=weights_dtype(cfg))
    return auto_class.from_pretrained(
        resolve_model_path(cfg.model.name_or_path),
        trust_remote_code=cfg.model.trust_remote_code,
        attn_implementation=cfg.model.attention,
        dtype=weights_dtype(cfg),  # not the dtype the checkpoint was saved in (transformers 5's default)
        **quantization_options(cfg),  # model.lora.quantize: bitsandbytes' config and this process's GPU
        **config_kwargs,
    )


def weights_dtype(cfg) -> torch.dtype:
    """model.dtype as a torch dtype: float32 unless the config asks for 16-bit weights."""
    return getattr(torch, cfg.model.dtype)


def tokenizer_ids(tokenizer) -> dict:
    """vocab_size and the special-token ids a model config takes from its tokenizer."""
    if tokenizer is None:
        return {}
    ids = {"vocab_size": len(tokenizer)}
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(tokenizer, name, None) is not None:
            ids[name] = getattr(tokenizer, name)
    return ids


def load_head_model(cfg, auto_class, tokenizer, **config_kwargs):
    """A task head on the encoder (from_config_or_pretrained); only the head trains with model.freeze_encoder."""
    model = from_config_or_pretrained(cfg, auto_class, tokenizer, **config_kwargs)
    if cfg.model.freeze_encoder:
        freeze_encoder(model)
    return model


def freeze_encoder(model) -> None:
    """Train the task head only."""
    for param in model.base_model.parameters():
        param.requires_grad = False


def enable_gradient_checkpointing(model) -> None:
    """train.gradient_checkpointing: each layer's activations are recomputed in backward instead of kept.
    Non-reentrant (torch.utils.checkpoint with use_reentrant=False): works under DDP, and the recomputation
    replays the CPU RNG state, so dropout draws the same masks."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ModelError(
            f"train.gradient_checkpointing: {type(model).__name__} does not support gradient checkpointing; "
            "remove the key"
        )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def build_model(cfg, load_task_model, label_names, tokenizer):
    """The model to train: model.builder's (the user's function of the config, label names and tokenizer) or the
    task's own (load_task_model). A builder's model must be a transformers PreTrainedModel, for the exports."""
    if cfg.model.builder is None:
        return load_task_model(cfg, label_names, tokenizer)
    model = load_reference(cfg.model.builder, "model.builder")(cfg, label_names, tokenizer)
    if not isinstance(model, PreTrainedModel):
        raise ModelError(
            f"model.builder: {cfg.model.builder} returned {type(model).__name__}; return a transformers "
            "PreTrainedModel (e.g. AutoModelForSequenceClassification.from_config(...)), which save_pretrained exports"
        )
    if cfg.model.freeze_encoder:
        freeze_encoder(model)
    return model
