"""`ptrain chat`: a conversation in the terminal with an exported causal LM, each turn rendered by its tokenizer's
chat template. Reads user lines from stdin (typed or piped), prints each answer on stdout; /reset, /exit, EOF."""

from __future__ import annotations

import sys
from typing import TextIO

import torch

from ptrain.errors import ModelError
from ptrain.inference.exports import load_exported
from ptrain.runtime.precision import autocast, inference_precision
from ptrain.tasks.generation import Sampling, generate_options

RESET, EXIT = "/reset", "/exit"


def chat_command(
    model_dir: str,
    sampling: Sampling,
    system: str | None = None,
    precision: str = "auto",
    lines: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
) -> int:
    """Answer every user line of `lines` in turn, with the conversation so far as context."""
    tokenizer, model = load_chat_model(model_dir)
    if not sampling.greedy and (sampling.temperature <= 0 or not 0 < (sampling.top_p or 1.0) <= 1):
        raise ModelError("--temperature must be above 0 and --top-p in (0, 1]")
    torch.manual_seed(sampling.seed)
    start = [{"role": "system", "content": system}] if system else []
    messages, interactive = list(start), lines.isatty()
    if interactive:
        print(f"ptrain: chatting with {model_dir}; {RESET} clears the history, {EXIT} or Ctrl-D ends", file=sys.stderr)
    with autocast(inference_precision(precision)):
        while (line := read_turn(lines, interactive)) is not None:
            if line == EXIT:
                break
            if line == RESET:
                messages = list(start)
                print("ptrain: history cleared", file=sys.stderr)
                continue
            if line:
                messages.append({"role": "user", "content": line})
                answer = reply(model, tokenizer, messages, sampling)
                messages.append({"role": "assistant", "content": answer})
                print(answer, file=out, flush=True)
    return 0


def read_turn(lines: TextIO, interactive: bool) -> str | None:
    """The next user line without its line break, or None at end of input."""
    if interactive:
        print("you> ", end="", file=sys.stderr, flush=True)
    line = lines.readline()
    return None if line == "" else line.strip()


def load_chat_model(model_dir: str):
    """Tokenizer and model of a causal LM export whose tokenizer carries a chat template."""
    tokenizer, model, task = load_exported(model_dir)
    if getattr(task, "pipeline", None) != "text-generation":
        raise ModelError(f"--model {model_dir} is a {task.name} model; ptrain chat needs a causal language model")
    if not tokenizer.chat_template:
        raise ModelError(
            f"--model {model_dir}: its tokenizer has no chat template; export a model trained with a chat template "
            "(set tokenizer.chat_template and save_pretrained it into the folder), or use ptrain generate to continue "
            "plain text"
        )
    return tokenizer, model.eval()


def reply(model, tokenizer, messages: list[dict], sampling: Sampling) -> str:
    """The model's answer to the conversation: the template with the assistant's turn opened, generated from,
    the new tokens alone decoded without special tokens. The oldest turns are left out when the context is full."""
    ids = prompt_ids(tokenizer, messages)
    limit = getattr(model.config, "max_position_embeddings", None)
    while limit is not None and ids.shape[1] + sampling.max_new_tokens > limit and len(messages) > 1:
        first = 1 if messages[0]["role"] == "system" else 0
        if len(messages) - first <= 1:
            raise ModelError(
                f"the turn needs {ids.shape[1]} tokens and --max-new-tokens {sampling.max_new_tokens} more, beyond "
                f"the model's {limit} positions; send a shorter line or lower --max-new-tokens"
            )
        messages = messages[:first] + messages[first + 2 :]  # the oldest user line and its answer
        ids = prompt_ids(tokenizer, messages)
    with torch.no_grad():
        generated = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), **generate_options(tokenizer, sampling)
        )
    return tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True).strip()


def prompt_ids(tokenizer, messages: list[dict]) -> torch.Tensor:
    """The conversation rendered by the chat template, the assistant's turn opened, as a (1, length) tensor."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
