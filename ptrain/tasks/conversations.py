"""A row of the data as a conversation: a list of {role, content} messages, from a column of messages, from
instruction-style columns mapped to roles (chat.roles), or from a dialogue's alternating turns (chat.speakers); the
optional system prompt first. And the checks a conversation must pass before it is rendered (chat.bad_rows)."""

from __future__ import annotations

from collections.abc import Callable

ROLES = ("system", "user", "assistant")
NO_ASSISTANT, EMPTY_ASSISTANT, UNKNOWN_ROLE, NOT_TEXT = (
    "no assistant turn",
    "an empty assistant turn",
    "a role other than system, user, assistant",
    "a message that is not {role, content} text",
)


def source_columns(options) -> list[tuple[str, str]]:
    """(config key, column) pairs each split must have."""
    if options.roles:
        return [(f"chat.roles.{role}", column) for role, columns in options.roles.items() for column in columns]
    if options.speakers:
        return [("chat.turns_column", options.turns_column)]
    return [("chat.messages_column", options.messages_column)]


def row_reader(options) -> Callable[[dict, int], list[dict]]:
    """(batch, position) -> the conversation of that row of a datasets batch."""
    system = [{"role": "system", "content": options.system_prompt}] if options.system_prompt else []
    if options.roles:

        def from_columns(batch: dict, i: int) -> list[dict]:
            messages = []
            for role, columns in options.roles.items():
                parts = [str(batch[column][i]).strip() for column in columns if batch[column][i] is not None]
                messages.append({"role": role, "content": "\n\n".join(part for part in parts if part)})
            return system + messages

        return from_columns
    if options.speakers:
        speakers = options.speakers

        def from_turns(batch: dict, i: int) -> list[dict]:
            turns = batch[options.turns_column][i] or []
            return system + [{"role": speakers[n % len(speakers)], "content": t} for n, t in enumerate(turns)]

        return from_turns

    def from_messages(batch: dict, i: int) -> list[dict]:
        messages = batch[options.messages_column][i] or []
        return system + [dict(m) if isinstance(m, dict) else m for m in messages]

    return from_messages


def problem(messages: list) -> str | None:
    """Why a conversation cannot train (one of the reasons above), or None. Turns after the last assistant turn
    are allowed (they carry no loss and are left out)."""
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in messages):
        return NOT_TEXT
    if any(m["role"] not in ROLES for m in messages):
        return UNKNOWN_ROLE
    assistant = [m for m in messages if m["role"] == "assistant"]
    if not assistant:
        return NO_ASSISTANT
    if any(not m["content"].strip() for m in assistant):
        return EMPTY_ASSISTANT
    return None


def until_last_answer(messages: list[dict]) -> list[dict]:
    """The conversation up to and including its last assistant turn."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[: last + 1]
