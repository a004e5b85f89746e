"""A conversation as model inputs and labels, through its chat template: the labels carry each assistant turn's
content and the token ending the turn (chat.loss_on=assistant), or every token (all); -100 elsewhere.

The template renders the conversation up to each assistant turn with the generation prompt, then through that turn;
the text between the two renderings is the answer. Each piece is tokenized on its own, so the prompt tokens are
those generation sees and the answer's first token is not merged with the prompt's last. Any template whose
renderings extend one another works, whatever its shape; one that rewrites earlier turns is refused by name."""

from __future__ import annotations

from dataclasses import dataclass, field

from ptrain.tasks.loss import IGNORE_INDEX


class TemplateShapeError(ValueError):
    """The template renders a conversation's prefix differently inside the whole conversation."""


@dataclass
class Encoded:
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    turn_ends: list[int] = field(default_factory=list)  # token count after each assistant turn's labelled part


def render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def pieces(tokenizer, messages: list[dict], end_of_turn: str) -> list[tuple[str, bool]]:
    """(text, is_answer) pieces whose concatenation is the rendered conversation up to its last assistant turn's
    end-of-turn text; what follows it (a newline) joins the next prompt."""
    out, done, pending = [], "", ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt, whole = render(tokenizer, messages[:i], True), render(tokenizer, messages[: i + 1], False)
        if not prompt.startswith(done) or not whole.startswith(prompt):
            raise TemplateShapeError(f"turn {i}")
        answer = whole[len(prompt) :]
        end = answer.rfind(end_of_turn)
        cut = end + len(end_of_turn) if end_of_turn and end >= 0 else len(answer.rstrip())
        out += [(pending + prompt[len(done) :], False), (answer[:cut], True)]
        pending, done = answer[cut:], whole
    return out


def encode(tokenizer, messages: list[dict], end_of_turn: str, loss_on: str) -> Encoded:
    """Token ids and labels of a conversation that ends with an assistant turn."""
    encoded = Encoded()
    for text, is_answer in pieces(tokenizer, messages, end_of_turn):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        encoded.input_ids += ids
        encoded.labels += ids if is_answer or loss_on == "all" else [IGNORE_INDEX] * len(ids)
        if is_answer:
            encoded.turn_ends.append(len(encoded.input_ids))
    if encoded.labels:  # nothing predicts a conversation's first token: in a packed row, not the one before it
        encoded.labels[0] = IGNORE_INDEX
    return encoded


def fit(encoded: Encoded, max_length: int, keep_leading_turns: bool) -> tuple[Encoded | None, bool]:
    """The conversation within max_length tokens: whole, or (keep_leading_turns) cut after the last assistant turn
    that fits, never inside an answer; None when not even the first answer fits. Returns (encoded, was_cut)."""
    if len(encoded.input_ids) <= max_length:
        return encoded, False
    fitting = [end for end in encoded.turn_ends if end <= max_length]
    if not keep_leading_turns or not fitting:
        return None, False
    end = fitting[-1]
    return Encoded(encoded.input_ids[:end], encoded.labels[:end], fitting), True
