"""The chat task's declaration (ptrain/tasks/declarations.py lists it): its config section and checks, torch-free;
ptrain/tasks/chat.py adds the hooks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ptrain.config import Strict
from ptrain.errors import ConfigError
from ptrain.tasks.base import Task


class ChatOptions(Strict):
    messages_column: str = Field(
        "messages",
        description="The column of conversations: lists of {role, content} messages (roles system, user, assistant).",
    )
    roles: dict[str, list[str]] | None = Field(
        None,
        description="Instruction-style rows instead: each role's columns, in message order, e.g. {user: [instruction, "
        "input], assistant: [output]}; a role's non-empty columns are joined by a blank line.",
    )
    speakers: list[str] | None = Field(
        None,
        description="Dialogues of unnamed alternating speakers instead (chat.turns_column, e.g. data.format="
        "dialogues): the role of each speaker in turn order, e.g. [user, assistant].",
    )
    turns_column: str = Field("turns", description="The column of utterance lists read with chat.speakers.")
    system_prompt: str | None = Field(None, description="A system message put first in every conversation.")
    template: str | None = Field(
        None,
        description="The chat template: chatml, zephyr, llama3 (built in; their special tokens are added to the "
        "tokenizer) or a Jinja template; null: the tokenizer's own. Saved with the export.",
    )
    end_of_turn: str | None = Field(
        None,
        description="The text ending an assistant turn, labelled with the answer and where generation stops; null: the "
        "built-in template's (<|im_end|>, <|eot_id|>) or the tokenizer's EOS.",
    )
    loss_on: Literal["assistant", "all"] = Field(
        "assistant",
        description="Which tokens carry the loss: each assistant turn's content and end-of-turn token, "
        "or the whole conversation.",
    )
    packing: bool = Field(
        True,
        description="Several conversations per row up to data.max_length, position_ids restarting at each one and "
        "attention never crossing them; false: one conversation per row.",
    )
    bad_rows: Literal["drop", "error"] = Field(
        "drop",
        description="Conversations with no assistant turn, an empty one, a role other than system/user/assistant or a "
        "template error: dropped and counted on the start line, or an error naming the first.",
    )
    too_long: Literal["drop_turns", "drop", "error"] = Field(
        "drop_turns",
        description="A conversation over data.max_length: kept up to its last assistant turn that fits (never cut "
        "inside an answer), dropped, or an error; counted on the start line.",
    )
    sample_count: int = Field(
        3, ge=0, description="Validation conversations whose first answer the model generates at each evaluation."
    )
    sample_max_new_tokens: int = Field(48, gt=0, description="Tokens generated per sample answer at most.")

    @field_validator("roles", mode="before")
    @classmethod
    def _role_columns(cls, value):
        """A role's single column may be given as a string."""
        if isinstance(value, dict):
            return {role: [columns] if isinstance(columns, str) else columns for role, columns in value.items()}
        return value


class ChatDeclaration(Task):
    name = "chat"
    metrics = ("loss", "perplexity")
    lower_is_better = frozenset({"loss", "perplexity"})
    Options = ChatOptions
    peft_task_type = "CAUSAL_LM"
    refuses_empty_texts = False  # an empty input column is no empty conversation: chat.bad_rows decides

    def check(self, cfg, path) -> None:
        options = self.options(cfg)
        if options.roles is not None and options.speakers is not None:
            raise ConfigError(f"{path}: chat.roles and chat.speakers both set; keep the one that matches the data")
        for role in [*(options.roles or {}), *(options.speakers or [])]:
            if role not in ("system", "user", "assistant"):
                raise ConfigError(f"{path}: chat role '{role}' is not system, user or assistant; rename it")
        if options.roles is not None and "assistant" not in options.roles:
            raise ConfigError(f"{path}: chat.roles names no assistant column; add assistant: [COLUMN]")
        if options.speakers is not None and "assistant" not in options.speakers:
            raise ConfigError(f"{path}: chat.speakers has no assistant; e.g. chat.speakers=[user,assistant]")
