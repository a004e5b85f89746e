"""The linear probe's task hooks: a frozen encoder's pooled features ([CLS] or mean) and a logistic-regression
head. The recipe that fits the head is ptrain/training/probe.py; these hooks score (`ptrain eval`) and label
(`ptrain predict`) its export: the encoder folder (pipeline("feature-extraction") loads it) plus the head."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModel

from ptrain.errors import ModelError
from ptrain.model.loading import from_config_or_pretrained
from ptrain.tasks.base import EvalContext, EvalResult
from ptrain.tasks.classification import TextTask, label_rows, label_scores
from ptrain.tasks.declarations import LinearProbeDeclaration
from ptrain.tasks.gather import evaluation_pass

HEAD_FILE = "probe_head.safetensors"  # weight [labels, hidden] and bias [labels], in the export folder


class LinearProbe(TextTask, LinearProbeDeclaration):
    """Text and label columns, label names and tokenization as in sequence classification; trained by its own
    recipe (ptrain/training/probe.py), which encodes once and fits a logistic regression: no loss, no loop."""

    reads_pairs = False
    stratified = True
    pipeline = "feature-extraction"
    auto_class = AutoModel

    def load_model(self, cfg, label_names, tokenizer):
        model = from_config_or_pretrained(cfg, self.auto_class, tokenizer)
        model.requires_grad_(False)
        return model.eval()

    def evaluate(self, model, loader, accelerator, context: EvalContext) -> EvalResult:
        """Scores of an export: encode the split, apply its head."""
        encoder = accelerator.unwrap_model(model)
        features, labels, seconds, tokens = encode(encoder, loader, accelerator, encoder.config.probe_pooling)
        weight, bias = load_head(encoder)
        predictions = (features @ weight.T + bias).argmax(-1)
        return EvalResult(label_scores(predictions, labels, len(context.label_names)), tokens, seconds)

    def track(self, tracker, result: EvalResult, context: EvalContext, step: int) -> None:
        """The probe recipe writes its own figures (ptrain/training/probe.py)."""

    @torch.no_grad()
    def predict(self, model, tokenizer, texts: list[str], batch_size: int, pairs=None) -> list[dict]:
        """Label and per-class probabilities, as sequence classification's predict."""
        config, (weight, bias) = model.config, load_head(model)
        names = [config.id2label[i] for i in range(weight.shape[0])]
        probs = torch.empty(len(texts), len(names))
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=config.probe_max_length,
                return_tensors="pt",
            )
            hidden = model(**encoded).last_hidden_state
            features = pool(hidden, encoded["attention_mask"], config.probe_pooling).float()
            probs[start : start + batch_size] = (features @ weight.T + bias).softmax(-1)
        return label_rows(texts, probs, names)

    def matches_export(self, config) -> bool:
        return getattr(config, "ptrain_task", None) == self.name


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per text: the [CLS] (first) position, or the mean over real (non-pad) tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def encode(encoder, loader, accelerator, pooling: str) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Pooled fp32 features and labels of a whole split, in raw-split row order (the loader sorts by length);
    seconds taken and real tokens encoded (all processes)."""

    def per_batch(batch: dict, labels: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        with accelerator.autocast():
            hidden = encoder(**batch).last_hidden_state
        return {"features": pool(hidden, batch["attention_mask"], pooling).float(), "labels": labels, "rows": rows}

    parts, tokens, seconds = evaluation_pass(encoder, loader, accelerator, per_batch)
    features, labels, rows = (torch.cat(parts[key]) for key in ("features", "labels", "rows"))
    order = torch.argsort(rows)
    return features[order], labels[order], seconds, tokens


def load_head(encoder) -> tuple[torch.Tensor, torch.Tensor]:
    path = Path(encoder.name_or_path) / HEAD_FILE
    if not path.is_file():
        raise ModelError(
            f"{encoder.name_or_path}: no {HEAD_FILE}; a linear-probe export holds the encoder and its head"
        )
    head = load_file(str(path))
    return head["weight"], head["bias"]
