"""Token classification (NER): word tags aligned to sub-tokens, cross entropy over labelled tokens,
entity-level precision/recall/F1 overall and per type (seqeval), entity spans with character offsets."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, pipeline

from ptrain.data.collate import pad_multiple
from ptrain.model.loading import load_head_model
from ptrain.tasks.base import EvalContext, EvalResult
from ptrain.tasks.classification import label_maps
from ptrain.tasks.declarations import TokenClassificationDeclaration
from ptrain.tasks.entities import (
    OUTSIDE,
    align_to_subtokens,
    check_word_columns,
    entity_scores,
    entity_spans,
    entity_types,
    report_table,
    tag_names,
    tag_to_id,
    worst_sentences_table,
)
from ptrain.tasks.gather import evaluation_pass
from ptrain.tasks.loss import IGNORE_INDEX, TokenLoss, balanced_class_weights


class TokenClassification(TokenClassificationDeclaration):
    pipeline = "token-classification"
    uses_label_names = True
    auto_class = AutoModelForTokenClassification

    def columns(self, cfg) -> list[tuple[str, str]]:
        return [("data.text_column", cfg.data.text_column), ("data.label_column", cfg.data.label_column)]

    def label_names(self, cfg, train) -> list[str]:
        return tag_names(cfg, train)

    def encoder(self, cfg, tokenizer, label_names, ds, split):
        words, tags, max_length = cfg.data.text_column, cfg.data.label_column, cfg.data.max_length
        check_word_columns(ds, split, words, tags)
        mapping = tag_to_id(ds, split, tags, label_names)

        def encode(batch: dict, indices: list[int]) -> dict:
            encoded = tokenizer(batch[words], is_split_into_words=True, truncation=True, max_length=max_length)
            encoded["labels"] = [
                align_to_subtokens(encoded.word_ids(i), [mapping[tag] for tag in row_tags])
                for i, row_tags in enumerate(batch[tags])
            ]
            encoded["idx"] = indices
            return encoded

        return encode

    def collator(self, cfg, tokenizer, device: torch.device):
        multiple = pad_multiple(cfg.train.mixed_precision, device)
        return DataCollatorForTokenClassification(tokenizer, padding="longest", pad_to_multiple_of=multiple)

    def load_model(self, cfg, label_names, tokenizer):
        return load_head_model(cfg, self.auto_class, tokenizer, **label_maps(label_names))

    def build_loss(self, cfg, splits) -> TokenLoss:
        weights = cfg.train.class_weights
        if weights == "balanced":
            labelled = [label for row in splits.tokenized["train"]["labels"] for label in row if label != IGNORE_INDEX]
            weights = balanced_class_weights(labelled, len(splits.label_names))
        elif weights is not None:
            weights = torch.tensor(weights, dtype=torch.float32)
        return TokenLoss(cfg.train.label_smoothing, weights)

    @torch.no_grad()
    def evaluate(self, model, loader, accelerator, context: EvalContext) -> EvalResult:
        """Per sentence, gathered once each (gather_for_metrics); scored on whole sentences: the gold tags come
        from the raw split, and words cut off by data.max_length count as predicted O."""
        start, names = time.perf_counter(), context.label_names

        def per_batch(batch: dict, labels: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
            logits = model(**batch).logits.float()
            losses = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=IGNORE_INDEX)
            predicted = logits.argmax(-1).masked_fill(labels == IGNORE_INDEX, IGNORE_INDEX)
            predicted, labels = accelerator.pad_across_processes((predicted, labels), dim=1, pad_index=IGNORE_INDEX)
            counts = (labels != IGNORE_INDEX).sum(1)
            return {"predicted": predicted, "labels": labels, "losses": losses.sum(1), "counts": counts, "rows": rows}

        gathered, tokens, _ = evaluation_pass(model, loader, accelerator, per_batch)
        parts = {key: _sentences(gathered.get(key, [])) for key in ("predicted", "labels", "losses", "counts", "rows")}
        details = word_sequences(parts, names, context)
        metrics, report = entity_scores(details["gold"], details["predicted"], entity_types(names))
        metrics["loss"] = sum(parts["losses"]) / max(sum(parts["counts"]), 1)  # per labelled word, unsmoothed
        details["report"] = report
        ordered = {key: metrics[key] for key in self.metrics} | metrics
        return EvalResult(ordered, tokens, time.perf_counter() - start, details)

    def prediction_rows(self, result: EvalResult, context: EvalContext) -> list[dict]:
        """Per sentence: its words, gold and predicted entity spans, the mean loss per labelled word and the
        labelled-word count (the loss column's mean weighted by the counts is the printed loss)."""
        details, words = result.details, context.raw[context.cfg.data.text_column]
        order = sorted(range(len(details["rows"])), key=details["rows"].__getitem__)
        rows = []
        for i in order:
            sentence = words[details["rows"][i]]
            rows.append(
                {
                    "text": " ".join(sentence),
                    "gold": entity_spans(details["gold"][i], sentence),
                    "predicted": entity_spans(details["predicted"][i], sentence),
                    "loss": details["losses"][i],
                    "labelled_words": details["counts"][i],
                }
            )
        return rows

    def track(self, tracker, result: EvalResult, context: EvalContext, step: int) -> None:
        tracker.text("eval/entity_report", report_table(result.details["report"]), step)
        count = context.cfg.train.highest_loss_examples
        if count and context.raw is not None:
            words = context.raw[context.cfg.data.text_column]
            tracker.text("eval/highest_loss_sentences", worst_sentences_table(result.details, words, count), step)

    def predict(self, model, tokenizer, texts: list[str], batch_size: int, pairs=None) -> list[dict]:
        """Entities per text: type, character offsets [start, end), mean score, the text they cover. A word takes
        the tag of its first sub-token, as in training (aggregation "first")."""
        tagger = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="first")
        rows = []
        for text, found in zip(texts, tagger(list(texts), batch_size=batch_size)):  # a list: one result per text
            entities = [
                {
                    "type": e["entity_group"],
                    "start": int(e["start"]),
                    "end": int(e["end"]),
                    "score": float(e["score"]),
                    "text": text[e["start"] : e["end"]],
                }
                for e in found
            ]
            rows.append({"text": text, "entities": entities})
        return rows


def _sentences(batches: list[torch.Tensor]) -> list:
    """One entry per sentence: a number (loss, count, row) or a tensor of padded tag ids."""
    return [row for part in batches for row in (part.tolist() if part.dim() == 1 else list(part))]


def word_sequences(parts: dict, names: list[str], context: EvalContext) -> dict:
    """Gold and predicted tag names per sentence (one per word), mean loss per word and the raw row of each."""
    gold_rows = context.raw[context.cfg.data.label_column] if context.raw is not None else None
    details: dict[str, list] = {"gold": [], "predicted": [], "losses": [], "counts": [], "rows": parts["rows"]}
    for predicted, labels, loss, count, row in zip(
        *(parts[k] for k in ("predicted", "labels", "losses", "counts", "rows"))
    ):
        labelled = labels != IGNORE_INDEX
        words_predicted = [names[i] for i in predicted[labelled].tolist()]
        if gold_rows is None:
            gold = [names[i] for i in labels[labelled].tolist()]
        else:
            gold = [tag if isinstance(tag, str) else names[tag] for tag in gold_rows[row]]
        details["gold"].append(gold)
        details["predicted"].append(words_predicted + [OUTSIDE] * (len(gold) - len(words_predicted)))
        details["losses"].append(loss / max(count, 1))
        details["counts"].append(count)
    return details
