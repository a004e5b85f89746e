"""Chat templates: the tokenizer's own, or one the config names (chat.template) for a tokenizer that has none (a
scratch model's, one trained on the data): three built-in shapes, or a Jinja template of the user's. Setting one
also adds its special tokens to the tokenizer (a scratch model is then built with them) and records the token that
ends an assistant turn, which generation stops at."""

from __future__ import annotations

from dataclasses import dataclass

from ptrain.errors import ConfigError


@dataclass(frozen=True)
class Template:
    jinja: str
    special_tokens: tuple[str, ...]  # added to the tokenizer as special tokens (never split, never merged)
    end_of_turn: str | None  # the text ending an assistant turn; None: the tokenizer's EOS


BUILT_IN = {
    # ChatML (Qwen, many fine-tunes): <|im_start|>role\ncontent<|im_end|>\n
    "chatml": Template(
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        ("<|im_start|>", "<|im_end|>"),
        "<|im_end|>",
    ),
    # Zephyr: <|role|>\ncontent</s>\n, the tokenizer's EOS ending each turn
    "zephyr": Template(
        "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}",
        ("<|system|>", "<|user|>", "<|assistant|>"),
        None,
    ),
    # Llama 3: a header per turn, <|eot_id|> after its content
    "llama3": Template(
        "{{ '<|begin_of_text|>' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
        ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        "<|eot_id|>",
    ),
}


def use_template(tokenizer, name_or_jinja: str | None, end_of_turn: str | None) -> str:
    """Give the tokenizer the configured template (idempotent) and return the text ending an assistant turn.
    Without one, the tokenizer must have its own."""
    if tokenizer.pad_token is None:  # GPT-2-style: pad with EOS (padded positions carry no loss, no attention)
        tokenizer.pad_token = tokenizer.eos_token
    if name_or_jinja is None:
        if not tokenizer.chat_template:
            raise ConfigError(
                f"the tokenizer has no chat template; set chat.template to one of {sorted(BUILT_IN)} or a Jinja "
                "template"
            )
        return end_of_turn or tokenizer.eos_token
    template = BUILT_IN.get(name_or_jinja) or Template(name_or_jinja, (), None)
    missing = [token for token in template.special_tokens if token not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    tokenizer.chat_template = template.jinja
    return end_of_turn or template.end_of_turn or tokenizer.eos_token
