"""Text continuations from a causal language model: the TensorBoard samples at each evaluation and
`ptrain generate`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ptrain.tasks.tables import markdown_table


@dataclass
class Sampling:
    max_new_tokens: int = 40
    greedy: bool = False
    temperature: float = 1.0
    top_k: int | None = 50  # None or 0: no top-k filter
    top_p: float | None = None  # nucleus sampling; None: off
    seed: int = 0
    add_special_tokens: bool = True  # False for a prompt rendered by a chat template (it holds its own)


def continue_prompts(model, tokenizer, prompts: list[str], sampling: Sampling) -> list[str]:
    """One continuation (the new text only) per prompt. The global RNG is saved and restored around the
    draws, so sampling during training leaves the training randomness (dropout, masking) untouched."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(sampling.seed)
        for prompt in prompts:  # one at a time: no padding side to get right, and prompts are few
            text = prompt or tokenizer.bos_token or tokenizer.eos_token
            encoded = tokenizer(text, return_tensors="pt", add_special_tokens=sampling.add_special_tokens).to(device)
            encoded.pop("token_type_ids", None)  # GPT-2 would add them as embeddings; causal LMs train without them
            generated = model.generate(**encoded, **generate_options(tokenizer, sampling))
            outputs.append(tokenizer.decode(generated[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True))
    model.train(was_training)
    return outputs


def generate_options(tokenizer, sampling: Sampling) -> dict:
    """model.generate keyword arguments for `sampling`: greedy, or sampling with temperature, top-k and top-p."""
    options = {"max_new_tokens": sampling.max_new_tokens, "pad_token_id": tokenizer.pad_token_id}
    if sampling.greedy:
        return {**options, "do_sample": False}
    return {
        **options,
        "do_sample": True,
        "temperature": sampling.temperature,
        "top_k": sampling.top_k or 0,
        "top_p": sampling.top_p if sampling.top_p is not None else 1.0,
    }


def samples_table(prompts: list[str], continuations: list[str]) -> str:
    """Markdown for TensorBoard's text tab: prompt and continuation, line breaks kept visible."""
    return markdown_table(["prompt", "continuation"], zip(prompts, continuations), line_break="<br>")
