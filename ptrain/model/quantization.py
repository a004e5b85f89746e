"""model.lora.quantize (QLoRA): the from_pretrained options that load a base model quantized by bitsandbytes, on
this process's GPU. ptrain/config/checks.py refuses the key before any work where bitsandbytes or CUDA is missing."""

from __future__ import annotations

import os

import torch

# train.mixed_precision -> the dtype 4-bit layers compute in (auto is resolved before the model loads; if not, bf16)
COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}


def quantization_options(cfg) -> dict:
    """from_pretrained keyword arguments: none without model.lora.quantize; else a BitsAndBytesConfig (4bit: NF4
    with double quantization, as the QLoRA paper; 8bit: LLM.int8) and a device_map placing the whole model on this
    process's GPU (bitsandbytes quantizes as the weights reach it; Accelerate does not move quantized models)."""
    quantize = cfg.model.lora.quantize if cfg.model.lora is not None else None
    if quantize is None:
        return {}
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=COMPUTE_DTYPES.get(cfg.train.mixed_precision, torch.bfloat16),
        )
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # Accelerate's launcher sets LOCAL_RANK
    return {"quantization_config": config, "device_map": {"": device}}
