"""Chat templates and labels, token by token: exactly each assistant turn's content and its end-of-turn token carry
labels, for templates of different shapes (ChatML's end-of-turn token with a newline after it, Llama 3's headers,
Zephyr's EOS-ended turns, and a Jinja template of the user's); the prompt is tokenized as generation sees it."""

from __future__ import annotations

import pytest

from ptrain.model.tokenizer_training import train_bpe
from ptrain.tasks.chat_encoding import IGNORE_INDEX, TemplateShapeError, encode, fit, render
from ptrain.tasks.chat_templates import BUILT_IN, use_template

CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4, of course."},
    {"role": "user", "content": "And 3 + 3?\nTell me."},
    {"role": "assistant", "content": "6.\nSix, that is."},
]
ANSWERS = ["4, of course.", "6.\nSix, that is."]
# a template of the user's: Alpaca-like headers, the turn closed by the tokenizer's EOS and a blank line
USER_TEMPLATE = (
    "{% for m in messages %}{{ '### ' + m['role'] + ':\\n' + m['content'] }}{% if m['role'] == 'assistant' %}"
    "{{ eos_token }}{% endif %}{{ '\\n\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '### assistant:\\n' }}"
    "{% endif %}"
)


@pytest.fixture(scope="module")
def texts():
    return [m["content"] for m in CONVERSATION] * 20 + ["of course that is the answer, tell me more"] * 20


def tokenizer_with(template: str, texts: list[str]):
    tokenizer = train_bpe(texts, vocab_size=300, min_frequency=1)
    return tokenizer, use_template(tokenizer, template, None)


def labelled_runs(labels: list[int]) -> list[list[int]]:
    """The maximal runs of consecutive labelled tokens."""
    runs, current = [], []
    for label in labels + [IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            runs, current = runs + [current], []
    return runs


@pytest.mark.parametrize(
    "template, end_of_turn",
    [("chatml", "<|im_end|>"), ("llama3", "<|eot_id|>"), ("zephyr", "</s>"), (USER_TEMPLATE, "</s>")],
    ids=["chatml", "llama3", "zephyr", "user-jinja"],
)
def test_only_each_answer_and_its_end_of_turn_token_carry_labels(texts, template, end_of_turn):
    tokenizer, eot = tokenizer_with(template, texts)
    assert eot == end_of_turn
    encoded = encode(tokenizer, CONVERSATION, eot, "assistant")
    whole = render(tokenizer, CONVERSATION, False)
    assert tokenizer.decode(encoded.input_ids) == whole[: whole.rindex(end_of_turn) + len(end_of_turn)]
    eot_id = tokenizer.convert_tokens_to_ids(end_of_turn)
    runs = labelled_runs(encoded.labels)
    assert len(runs) == 2  # one run per assistant turn, nothing else labelled
    for run, answer in zip(runs, ANSWERS):
        assert run[-1] == eot_id  # the turn's end-of-turn token, one token, labelled
        assert tokenizer.decode(run[:-1]) == answer  # and before it exactly the content
    labelled = [i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX]
    assert all(encoded.labels[i] == encoded.input_ids[i] for i in labelled)
    # the prompt before each answer is the text generation is given, tokenized the same way
    first_answer = labelled[0]
    prompt = render(tokenizer, CONVERSATION[:2], True)
    assert encoded.input_ids[:first_answer] == tokenizer(prompt, add_special_tokens=False)["input_ids"]


def test_the_whole_conversation_trains_with_loss_on_all_but_the_first_token(texts):
    tokenizer, eot = tokenizer_with("chatml", texts)
    every = encode(tokenizer, CONVERSATION, eot, "all")
    assert every.labels[0] == IGNORE_INDEX and every.labels[1:] == every.input_ids[1:]
    assert every.input_ids == encode(tokenizer, CONVERSATION, eot, "assistant").input_ids


def test_a_long_conversation_keeps_its_leading_turns_never_half_an_answer(texts):
    tokenizer, eot = tokenizer_with("chatml", texts)
    encoded = encode(tokenizer, CONVERSATION, eot, "assistant")
    first_end, second_end = encoded.turn_ends
    cut, was_cut = fit(encoded, second_end - 1, keep_leading_turns=True)
    assert was_cut and cut.input_ids == encoded.input_ids[:first_end] and len(labelled_runs(cut.labels)) == 1
    assert fit(encoded, first_end - 1, keep_leading_turns=True) == (None, False)  # not even the first answer fits
    assert fit(encoded, second_end - 1, keep_leading_turns=False) == (None, False)
    assert fit(encoded, second_end, keep_leading_turns=True) == (encoded, False)


def test_a_template_that_rewrites_earlier_turns_is_refused(texts):
    # renders only the last two messages: the whole conversation does not extend its prefix
    tokenizer, eot = tokenizer_with("{% for m in messages[-2:] %}{{ m['content'] + eos_token }}{% endfor %}", texts)
    with pytest.raises(TemplateShapeError):
        encode(tokenizer, CONVERSATION, eot, "assistant")


def test_built_in_templates_add_their_special_tokens_once(texts):
    tokenizer = train_bpe(texts, vocab_size=300, min_frequency=1)
    before = len(tokenizer)
    use_template(tokenizer, "llama3", None)
    use_template(tokenizer, "llama3", None)
    assert len(tokenizer) == before + len(BUILT_IN["llama3"].special_tokens)
    assert tokenizer.tokenize("<|eot_id|>") == ["<|eot_id|>"]
