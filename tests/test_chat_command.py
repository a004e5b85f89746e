"""`ptrain chat` through the real CLI on a tiny causal LM export given a ChatML template: piped user lines get the
answers greedy generation gives for the whole conversation so far, /reset starts it again, /exit ends it; sampling
is seeded; an export without a chat template is refused in one line. pipeline("text-generation") takes a list of
messages on the same export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from tests.conftest import CONFIGS, run_cli

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SCRATCH = "{model_type: gpt2, n_positions: 512, n_embd: 32, n_layer: 2, n_head: 2, tie_word_embeddings: false}"
GREEDY = ["--max-new-tokens", "6"]


@pytest.fixture(scope="module")
def export(tmp_path_factory, cache_dir) -> tuple[Path, Path]:
    """A tiny GPT-2 (configs/tiny_causal_lm.yaml, one step; untied, so its random logits do not echo the input token,
    a newline after the template's assistant line): final/ as ptrain wrote it (no template), and a copy whose
    tokenizer carries CHATML."""
    out = tmp_path_factory.mktemp("chat")
    args = [f"output_dir={out / 'runs'}", f"data.cache_dir={cache_dir}", f"model.scratch_config={SCRATCH}"]
    result = run_cli("train", str(CONFIGS / "tiny_causal_lm.yaml"), *args, "train.max_steps=1")
    assert result.returncode == 0, result.stderr[-3000:]
    (final,) = (out / "runs").glob("*/*/final")
    chat = out / "chat"
    tokenizer = AutoTokenizer.from_pretrained(final)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(chat)
    AutoModelForCausalLM.from_pretrained(final).save_pretrained(chat)
    return final, chat


def greedy_answer(folder: Path, messages: list[dict], max_new_tokens: int = 6) -> str:
    """What a greedy reply to `messages` is, computed here from the template and generate()."""
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


@pytest.mark.slow
def test_piped_conversation_keeps_history_and_reset_clears_it(export):
    _, chat = export
    lines = "Good morrow\nWhat news?\n/reset\nWhat news?\n/exit\nnever read\n"
    result = run_cli("chat", "--model", str(chat), "--system", "Be brief.", *GREEDY, "--precision", "no", input=lines)
    assert result.returncode == 0, result.stderr[-3000:]
    system = {"role": "system", "content": "Be brief."}
    first = greedy_answer(chat, [system, {"role": "user", "content": "Good morrow"}])
    history = [system, {"role": "user", "content": "Good morrow"}, {"role": "assistant", "content": first}]
    second = greedy_answer(chat, [*history, {"role": "user", "content": "What news?"}])
    after_reset = greedy_answer(chat, [system, {"role": "user", "content": "What news?"}])
    assert first and second != after_reset  # the history changes the answer to the same line
    assert result.stdout == f"{first}\n{second}\n{after_reset}\n"  # /exit: the last line is never answered
    assert "history cleared" in result.stderr


@pytest.mark.slow
def test_sampling_is_seeded_and_eof_ends_the_conversation(export):
    _, chat = export
    sampled = ["--temperature", "1.5", "--top-p", "0.95", "--max-new-tokens", "12", "--precision", "no"]
    runs = [run_cli("chat", "--model", str(chat), *sampled, "--seed", seed, input="Hail\n") for seed in "112"]
    assert [run.returncode for run in runs] == [0, 0, 0], runs[0].stderr[-3000:]
    assert runs[0].stdout == runs[1].stdout != runs[2].stdout
    assert len(runs[0].stdout.splitlines()) >= 1


@pytest.mark.slow
def test_export_without_chat_template_is_refused_in_one_line(export):
    final, _ = export
    result = run_cli("chat", "--model", str(final), input="hello\n")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"ptrain: error: --model {final}: its tokenizer has no chat template; export a model trained with a chat "
        "template (set tokenizer.chat_template and save_pretrained it into the folder), or use ptrain generate to "
        "continue plain text"
    ]


@pytest.mark.slow
def test_pipeline_takes_a_list_of_messages_on_the_export(export):
    _, chat = export
    generate = pipeline("text-generation", model=str(chat))
    messages = [{"role": "user", "content": "Good morrow"}]
    (out,) = generate(messages, max_new_tokens=6, do_sample=False)
    conversation = out["generated_text"]  # the messages with the assistant's answer appended
    assert conversation[:1] == messages and conversation[1]["role"] == "assistant"
    assert conversation[1]["content"].strip() == greedy_answer(chat, messages)
