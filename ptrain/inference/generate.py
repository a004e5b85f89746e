"""`ptrain generate`: continuations from an exported causal language model."""

from __future__ import annotations

from ptrain.errors import ModelError
from ptrain.inference.exports import load_exported
from ptrain.runtime.precision import autocast, inference_precision
from ptrain.tasks.generation import Sampling, continue_prompts


def generate_command(model_dir: str, prompts: list[str], sampling: Sampling, precision: str = "auto") -> list[str]:
    """`ptrain generate`: continuations from an exported causal language model."""
    tokenizer, model, task = load_exported(model_dir)
    if task.name != "causal_lm":
        raise ModelError(f"--model {model_dir} is a {task.name} model; ptrain generate needs a causal language model")
    if sampling.temperature <= 0 or (sampling.top_p is not None and not 0 < sampling.top_p <= 1):
        raise ModelError("--temperature must be above 0 and --top-p in (0, 1]; use --greedy for deterministic output")
    with autocast(inference_precision(precision)):  # on the CPU, in the dtype `auto` picks there by default
        return continue_prompts(model, tokenizer, prompts, sampling)
