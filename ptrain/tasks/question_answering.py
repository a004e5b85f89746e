"""Extractive question answering (SQuAD): a question and its context in overlapping windows, cross entropy of the
answer's start and end tokens, and the official exact match and F1 of the best span over all windows of each
question. transformers 5 has no question-answering pipeline: exports load with AutoModelForQuestionAnswering, and
`ptrain predict` answers questions about contexts with the settings the export keeps in its config."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding

from ptrain.data.collate import pad_multiple
from ptrain.data.labels import source_name
from ptrain.errors import ModelError
from ptrain.model.loading import load_head_model
from ptrain.tasks.base import EvalContext, EvalResult
from ptrain.tasks.gather import evaluation_pass
from ptrain.tasks.loss import IGNORE_INDEX
from ptrain.tasks.qa_answers import best_answers, squad_scores, top_spans
from ptrain.tasks.qa_declaration import QuestionAnsweringDeclaration, QuestionAnsweringOptions
from ptrain.tasks.qa_windows import answer_texts, context_offsets, encode_windows, gold_answers, window_labels
from ptrain.tasks.tables import markdown_table, wrapped

OFFSETS = "offset_mapping"  # evaluation windows only: each token's characters in the context (-1 outside)
SETTINGS = "question_answering"  # the export's config.json entry `ptrain predict` reads its settings from


class QuestionAnswering(QuestionAnsweringDeclaration):
    pipeline = None  # transformers 5 removed the question-answering pipeline
    auto_class = AutoModelForQuestionAnswering
    predict_columns = ("question", "context")

    def columns(self, cfg) -> list[tuple[str, str]]:
        options, key = self.options(cfg), "question_answering."
        names = ("question_column", "context_column", "answers_column", "answer_start_column")
        return [(key + name, getattr(options, name)) for name in names if getattr(options, name)]

    def tokenizer_texts(self, cfg, train):
        options = self.options(cfg)
        yield from train[options.question_column]
        yield from dict.fromkeys(train[options.context_column])  # each context once

    def encoder(self, cfg, tokenizer, label_names, ds, split):
        options, max_length = self.options(cfg), cfg.data.max_length
        check_fast(tokenizer)
        answers = gold_answers(ds, split, options)
        evaluated = split != "train"

        def encode(batch: dict, indices: list[int]) -> dict:
            questions, contexts = batch[options.question_column], batch[options.context_column]
            encoded = encode_windows(
                tokenizer,
                questions,
                contexts,
                max_length,
                options.doc_stride,
                source_name(ds, split),
                indices[0],
                batch.get("id"),
            )
            rows = [indices[question] for question in encoded.pop("overflow_to_sample_mapping")]
            encoded["labels"] = [
                window_labels(encoded, window, (answers[row].spans or [None])[0]) for window, row in enumerate(rows)
            ]
            if evaluated:
                encoded[OFFSETS] = [context_offsets(encoded, window) for window in range(len(rows))]
            else:
                del encoded[OFFSETS]
            encoded["idx"] = rows
            return dict(encoded)

        return encode

    def finish_split(self, cfg, split: str, ds, raw):
        return ds, {"questions": len(raw), "windows": len(ds)}

    def data_line(self, cfg, counts: dict[str, dict]) -> str:
        """How many windows the questions became: contexts longer than data.max_length take several."""
        parts = [
            f"{split} {c['questions']:,} questions in {c['windows']:,} windows "
            f"({c['windows'] / max(c['questions'], 1):.2f} per question)"
            for split, c in counts.items()
        ]
        return f"question_answering: {'; '.join(parts)}"

    def collator(self, cfg, tokenizer, device: torch.device):
        return WindowCollator(tokenizer, pad_multiple(cfg.train.mixed_precision, device))

    def load_model(self, cfg, label_names, tokenizer):
        model = load_head_model(cfg, self.auto_class, tokenizer)
        settings = self.options(cfg).model_dump(
            include={"doc_stride", "max_answer_length", "n_best", "unanswerable", "null_score_margin"}
        )
        setattr(model.config, SETTINGS, settings)
        return model

    def logits(self, outputs) -> torch.Tensor:
        return torch.stack((outputs.start_logits, outputs.end_logits), dim=-1)

    def build_loss(self, cfg, splits):
        return SpanLoss(cfg.train.label_smoothing)

    @torch.no_grad()
    def evaluate(self, model, loader, accelerator, context: EvalContext) -> EvalResult:
        """Every window once (gather_for_metrics), reduced on the device to its n best starts and ends; answers
        chosen per question over its windows; scored on every question of the split."""
        start, options = time.perf_counter(), self.options(context.cfg)

        def per_batch(batch: dict, labels: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
            offsets = batch.pop(OFFSETS)
            logits = self.logits(model(**batch)).float()
            losses = F.cross_entropy(logits, labels, reduction="none", ignore_index=IGNORE_INDEX).sum(1)
            return {**top_spans(logits, offsets, options.n_best), "losses": losses, "rows": rows}

        gathered, tokens, _ = evaluation_pass(model, loader, accelerator, per_batch)
        parts = {key: torch.cat(values).numpy() for key, values in gathered.items()}
        raw = context.raw
        answers = best_answers(parts, parts["rows"], raw[options.context_column], options)
        questions = sorted(answers)
        values = raw[options.answers_column]  # checked when the split was encoded
        gold = [answer_texts(values[row]) for row in questions]
        exact, f1 = squad_scores([answers[row]["answer"] for row in questions], gold)
        windows = np.bincount(parts["rows"], minlength=len(raw))
        losses = np.bincount(parts["rows"], weights=parts["losses"], minlength=len(raw))
        metrics = {
            "f1": float(np.mean(f1)),
            "exact_match": float(np.mean(exact)),
            "loss": float(parts["losses"].sum() / (2 * max(len(parts["losses"]), 1))),  # per start/end target
        }
        details = {
            "rows": questions,
            "answers": [answers[row] for row in questions],
            "gold": gold,
            "exact_match": exact,
            "f1": f1,
            "losses": [losses[row] / (2 * windows[row]) for row in questions],
            "windows": [int(windows[row]) for row in questions],
        }
        return EvalResult(metrics, tokens, time.perf_counter() - start, details)

    def trainer_rows(self, ds):
        """transformers' QA models take the labels as start_positions and end_positions."""
        positions = {"start_positions": [s for s, _ in ds["labels"]], "end_positions": [e for _, e in ds["labels"]]}
        for name, values in positions.items():
            ds = ds.add_column(name, values)
        return ds.remove_columns([c for c in ("labels", "idx", OFFSETS) if c in ds.column_names])

    def prediction_rows(self, result: EvalResult, context: EvalContext) -> list[dict]:
        """Per question, in file order: its id (when the data has one), question, gold answers, the predicted answer
        and its score, exact match, F1, loss per target over its windows, and the window count."""
        details, options, raw = result.details, self.options(context.cfg), context.raw
        ids = raw["id"] if "id" in raw.column_names else None
        questions = raw[options.question_column]
        rows = []
        for i, row in enumerate(details["rows"]):
            answer = details["answers"][i]
            rows.append(
                {
                    **({"id": ids[row]} if ids is not None else {}),
                    "question": questions[row],
                    "gold": details["gold"][i],
                    "predicted": answer["answer"],
                    "score": answer["score"],
                    "exact_match": details["exact_match"][i],
                    "f1": details["f1"][i],
                    "loss": details["losses"][i],
                    "windows": details["windows"][i],
                }
            )
        return rows

    def track(self, tracker, result: EvalResult, context: EvalContext, step: int) -> None:
        """The questions answered worst (lowest F1, then highest loss) as a table in TensorBoard's text tab."""
        count, details = context.cfg.train.highest_loss_examples, result.details
        if not count or context.raw is None:
            return
        questions = context.raw[self.options(context.cfg).question_column]
        order = sorted(range(len(details["rows"])), key=lambda i: (details["f1"][i], -details["losses"][i]))[:count]
        rows = [
            [
                wrapped(questions[details["rows"][i]]),
                wrapped(" / ".join(dict.fromkeys(details["gold"][i]))),
                wrapped(details["answers"][i]["answer"]),
                f"{details['f1'][i]:.0f}",
                f"{details['losses'][i]:.3f}",
            ]
            for i in order
        ]
        table = markdown_table(["question", "gold", "predicted", "F1", "loss"], rows, "lllrr", line_break="<br>")
        tracker.text("eval/worst_answers", table, step)

    def predict(self, model, tokenizer, texts: list[str], batch_size: int, pairs=None) -> list[dict]:
        """The answer to each question (texts) in its context (pairs), with the settings of the run that exported
        the model: {question, context, answer, score, start, end} (character offsets into the context)."""
        if pairs is None:
            raise ModelError("a question-answering model needs a context per question: pass --text-pair-column")
        options = QuestionAnsweringOptions(**getattr(model.config, SETTINGS, {}))
        check_fast(tokenizer)
        texts, pairs = list(texts), list(pairs)
        encoded = encode_windows(tokenizer, texts, pairs, tokenizer.model_max_length, options.doc_stride)
        rows = np.asarray(encoded["overflow_to_sample_mapping"])
        collate, parts = WindowCollator(tokenizer), {}
        inputs = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in encoded]
        windows = [
            {name: encoded[name][w] for name in inputs} | {OFFSETS: context_offsets(encoded, w)}
            for w in range(len(rows))
        ]
        model.eval()
        with torch.no_grad():
            for first in range(0, len(windows), batch_size):
                batch = collate(windows[first : first + batch_size])
                offsets = batch.pop(OFFSETS)
                batch = {key: value.to(model.device) for key, value in batch.items()}
                spans = top_spans(self.logits(model(**batch)).float().cpu(), offsets, options.n_best)
                for key, value in spans.items():
                    parts.setdefault(key, []).append(value)
        answers = best_answers({k: torch.cat(v).numpy() for k, v in parts.items()}, rows, pairs, options)
        return [{"question": q, "context": c, **answers[i]} for i, (q, c) in enumerate(zip(texts, pairs))]


class WindowCollator:
    """Windows padded to the batch's longest (the transformers padding collator), labels [start, end] per window,
    and on evaluation windows the character offsets padded with -1. Same batch every call."""

    same_every_call = True

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None):
        self.pad = DataCollatorWithPadding(tokenizer, padding="longest", pad_to_multiple_of=pad_to_multiple_of)

    def __call__(self, rows: list[dict]) -> dict:
        offsets = [row.pop(OFFSETS) for row in rows] if OFFSETS in rows[0] else None
        batch = self.pad(rows)
        if offsets is not None:
            padded = torch.full((len(rows), batch["input_ids"].shape[1], 2), -1, dtype=torch.long)
            for i, spans in enumerate(offsets):
                padded[i, : len(spans)] = torch.tensor(spans, dtype=torch.long).reshape(-1, 2)
            batch[OFFSETS] = padded
        return batch


class SpanLoss:
    """Cross entropy of the start token and of the end token, summed; target_weight counts both, so the mean is
    transformers' (start loss + end loss) / 2."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def to(self, device: torch.device) -> SpanLoss:
        return self

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), labels, reduction="sum", ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing
        )

    def target_weight(self, labels: torch.Tensor) -> torch.Tensor:
        return (labels != IGNORE_INDEX).sum().float()


def check_fast(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"question answering needs a fast tokenizer (character offsets); {type(tokenizer).__name__} is not one"
        )
