"""Chat and instruction fine-tuning of causal LMs: conversations rendered by a chat template, the loss on the
assistant's turns (chat_encoding.py), several conversations per row that never attend to one another (packing.py,
PositionsCollator), rows the template cannot train dropped by a stated policy and counted on the start line; at
each evaluation the loss and perplexity on assistant tokens and the model's answers to a few validation prompts."""

from __future__ import annotations

from collections import Counter

import jinja2
import torch
from transformers import AutoModelForCausalLM

from ptrain.data.collate import PositionsCollator, pad_multiple
from ptrain.data.labels import source_name
from ptrain.errors import DataError
from ptrain.model.loading import from_config_or_pretrained
from ptrain.tasks.base import EvalContext, EvalResult
from ptrain.tasks.chat_declaration import ChatDeclaration
from ptrain.tasks.chat_encoding import TemplateShapeError, encode, fit, render
from ptrain.tasks.chat_templates import use_template
from ptrain.tasks.conversations import problem, row_reader, source_columns, until_last_answer
from ptrain.tasks.generation import Sampling, continue_prompts
from ptrain.tasks.language_modeling import TokenLoss, perplexity_result
from ptrain.tasks.packing import packed_rows
from ptrain.tasks.tables import markdown_table

KEPT, CUT = "ok", "cut to the turns that fit"
TOO_LONG, TEMPLATE_ERROR = "too long", "a template error"


class Chat(ChatDeclaration):
    pipeline = "text-generation"
    auto_class = AutoModelForCausalLM

    def columns(self, cfg) -> list[tuple[str, str]]:
        return source_columns(self.options(cfg))

    def tokenizer_texts(self, cfg, train):
        read = row_reader(self.options(cfg))
        columns = {column: train[column] for _, column in self.columns(cfg)}
        for i in range(len(train)):
            for message in read(columns, i):
                if isinstance(message, dict) and isinstance(message.get("content"), str):
                    yield message["content"]

    def prepare_tokenizer(self, cfg, tokenizer) -> str:
        """The configured template on the tokenizer; returns the text ending an assistant turn."""
        options = self.options(cfg)
        return use_template(tokenizer, options.template, options.end_of_turn)

    def encoder(self, cfg, tokenizer, label_names, ds, split):
        """One row per conversation: input_ids, labels (chat_encoding.encode), idx and a status (KEPT, CUT or why
        it cannot train); finish_split applies the policies and packs."""
        options, end_of_turn = self.options(cfg), self.prepare_tokenizer(cfg, tokenizer)
        read, max_length = row_reader(options), cfg.data.max_length

        def encode_batch(batch: dict, indices: list[int]) -> dict:
            rows = {"input_ids": [], "labels": [], "idx": indices, "status": []}
            for i in range(len(indices)):
                messages, ids, labels = read(batch, i), [], []
                status = problem(messages)
                if status is None:
                    try:
                        encoded = encode(tokenizer, until_last_answer(messages), end_of_turn, options.loss_on)
                        encoded, cut = fit(encoded, max_length, options.too_long == "drop_turns")
                        status = TOO_LONG if encoded is None else CUT if cut else KEPT
                        if encoded is not None:
                            ids, labels = encoded.input_ids, encoded.labels
                    except (TemplateShapeError, jinja2.TemplateError):
                        status = TEMPLATE_ERROR
                rows["input_ids"].append(ids)
                rows["labels"].append(labels)
                rows["status"].append(status)
            return rows

        return encode_batch

    def finish_split(self, cfg, split: str, ds, raw):
        """The policies (chat.bad_rows, chat.too_long) applied, then the rows packed (chat.packing). Returns the
        split and its counts for the start line."""
        options, status_of = self.options(cfg), ds["status"]
        statuses = Counter(status_of)
        for status, count in statuses.items():
            if status in (KEPT, CUT):
                continue
            if (options.too_long if status == TOO_LONG else options.bad_rows) == "error":
                first = status_of.index(status)
                raise DataError(
                    f"{source_name(raw, split)}: {count} conversation(s) with {status} (first: data row "
                    f"{ds[first]['idx']}); fix them, or set chat.{'too_long' if status == TOO_LONG else 'bad_rows'}"
                    "=drop"
                )
        kept = ds.filter(lambda status: status in (KEPT, CUT), input_columns="status", keep_in_memory=True)
        kept = kept.remove_columns("status")
        if options.packing:
            packed = kept.map(
                packed_rows,
                batched=True,
                batch_size=None,
                fn_kwargs={"capacity": cfg.data.max_length},
                remove_columns=kept.column_names,
                keep_in_memory=True,
            )
        else:
            positions = [list(range(len(ids))) for ids in kept["input_ids"]]
            packed = kept.add_column("position_ids", positions).add_column("examples", [1] * len(kept))
        counts = {"conversations": len(kept), "rows": len(packed), **{k: v for k, v in statuses.items() if k != KEPT}}
        return packed, counts

    def data_line(self, cfg, counts: dict[str, dict]) -> str:
        """The start line's part: conversations and rows per split, then what was cut or dropped and why."""
        parts = []
        for split, c in counts.items():
            problems = ", ".join(f"{n:,} {why}" for why, n in c.items() if why not in ("conversations", "rows"))
            parts.append(
                f"{split} {c['conversations']:,} conversations in {c['rows']:,} rows "
                f"({c['conversations'] / max(c['rows'], 1):.1f} per row)" + (f" ({problems})" if problems else "")
            )
        policy = self.options(cfg)
        return f"chat: {'; '.join(parts)}; bad rows: {policy.bad_rows}, too long: {policy.too_long}"

    def collator(self, cfg, tokenizer, device: torch.device):
        self.prepare_tokenizer(cfg, tokenizer)
        return PositionsCollator(tokenizer.pad_token_id, pad_multiple(cfg.train.mixed_precision, device))

    def load_model(self, cfg, label_names, tokenizer):
        end_of_turn = self.prepare_tokenizer(cfg, tokenizer)
        model = from_config_or_pretrained(cfg, self.auto_class, tokenizer)
        if model.get_input_embeddings().num_embeddings < len(tokenizer):  # a pretrained model, new template tokens
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config is not None:  # generate() and pipeline() stop at the end of a turn
            model.generation_config.pad_token_id = tokenizer.pad_token_id
            model.generation_config.eos_token_id = stop_ids(tokenizer, end_of_turn)
        return model

    def build_loss(self, cfg, splits) -> TokenLoss:
        return TokenLoss(shift=True)

    def evaluate(self, model, loader, accelerator, context: EvalContext) -> EvalResult:
        """Loss and perplexity over the labelled (assistant) tokens, then the sample answers: every process
        generates them (same prompts, greedy), so sharded models run their forward on all ranks."""
        result = perplexity_result(model, loader, accelerator, TokenLoss(shift=True))
        prompts, references = sample_prompts(context, self.options(context.cfg).sample_count)
        if prompts:  # generation stops where load_model told the model's generation_config: at the end of a turn
            sampling = Sampling(
                max_new_tokens=self.options(context.cfg).sample_max_new_tokens, greedy=True, add_special_tokens=False
            )
            answers = continue_prompts(accelerator.unwrap_model(model), context.tokenizer, prompts, sampling)
            result.details = {
                "samples": [{"prompt": p, "reference": r, "answer": a} for p, r, a in zip(prompts, references, answers)]
            }
        return result

    def track(self, tracker, result: EvalResult, context: EvalContext, step: int) -> None:
        if result.details:
            samples = result.details["samples"]
            rows = [(s["prompt"], s["reference"], s["answer"]) for s in samples]
            table = markdown_table(["prompt", "reference", "answer"], rows, line_break="<br>")
            tracker.text("eval/samples", table, step)
            tracker.record("eval/samples", samples, step)

    def matches_export(self, config) -> bool:
        return False  # an export of a chat run is a causal LM: `ptrain predict` reads it as causal_lm


def stop_ids(tokenizer, end_of_turn: str | None) -> list[int]:
    """The token ids generation stops at: EOS and the end-of-turn token, when it is one token."""
    ids = {tokenizer.eos_token_id}
    if end_of_turn:
        encoded = tokenizer(end_of_turn, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1:
            ids.add(encoded[0])
    return sorted(ids - {None})


def sample_prompts(context: EvalContext, count: int) -> tuple[list[str], list[str]]:
    """The first `count` validation conversations up to their first answer, rendered with the generation prompt,
    and those answers."""
    if not count or context.raw is None:
        return [], []
    options = context.cfg.chat
    read, prompts, references = row_reader(options), [], []
    columns = {column: context.raw[column] for _, column in source_columns(options)}
    for i in range(len(context.raw)):
        messages = read(columns, i)
        if problem(messages) is not None:
            continue
        first = next(n for n, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append(render(context.tokenizer, messages[:first], True))
        references.append(messages[first]["content"])
        if len(prompts) == count:
            break
    return prompts, references
