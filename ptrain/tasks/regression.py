"""Sequence regression (one numeric target per text): summed squared error, Pearson and Spearman correlation,
MSE and MAE, a predicted-vs-gold scatter and the largest errors in TensorBoard. Targets are used as given (no
normalisation), so the export predicts in the data's own units."""

from __future__ import annotations

import math

import torch
from torchmetrics.functional import mean_absolute_error, mean_squared_error, pearson_corrcoef, spearman_corrcoef

from ptrain.data.labels import source_name
from ptrain.errors import DataError
from ptrain.model.loading import load_head_model
from ptrain.tasks.base import EvalContext, EvalResult, example_texts, file_order
from ptrain.tasks.classification import TextTask, predict_logits, text_encoder
from ptrain.tasks.declarations import RegressionDeclaration
from ptrain.tasks.figures import scatter_figure
from ptrain.tasks.gather import gather_outputs
from ptrain.tasks.tables import largest_errors_table

PROBLEM_TYPE = "regression"


class SquaredErrorLoss:
    """Summed squared error; divided by the window's row count it is the per-example MSE of one big batch."""

    def to(self, device: torch.device) -> SquaredErrorLoss:
        return self

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (logits.float().squeeze(-1) - labels.float()).square().sum()

    def target_weight(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.full((), float(labels.shape[0]), device=labels.device)  # a fill on the device: no host copy


class Regression(TextTask, RegressionDeclaration):
    """Text columns as in classification; the label column holds numbers."""

    uses_label_names = False
    problem_types = (PROBLEM_TYPE,)

    def label_names(self, cfg, train) -> list[str]:
        return []

    def encoder(self, cfg, tokenizer, label_names, ds, split):
        check_numeric(ds, split, cfg.data.label_column)
        return text_encoder(cfg, tokenizer, lambda values: [float(v) for v in values])

    def load_model(self, cfg, label_names, tokenizer):
        # id2label names the single output after the label column:
        # pipeline() returns {"label": <column>, "score": value}
        column = cfg.data.label_column
        return load_head_model(
            cfg,
            self.auto_class,
            tokenizer,
            num_labels=1,
            problem_type=PROBLEM_TYPE,
            id2label={0: column},
            label2id={column: 0},
        )

    def build_loss(self, cfg, splits) -> SquaredErrorLoss:
        return SquaredErrorLoss()

    def evaluate(self, model, loader, accelerator, context: EvalContext) -> EvalResult:
        def outputs(logits, labels):
            return {"predictions": logits.squeeze(-1)}

        details, tokens, seconds = gather_outputs(model, loader, accelerator, outputs)
        preds, gold = details["predictions"], details["labels"].float()
        metrics = {
            "pearson": _finite(pearson_corrcoef(preds, gold).item()),
            "spearman": _finite(spearman_corrcoef(preds, gold).item()),
            "loss": mean_squared_error(preds, gold).item(),
            "mae": mean_absolute_error(preds, gold).item(),
        }
        return EvalResult(metrics, tokens, seconds, details)

    def prediction_rows(self, result: EvalResult, context: EvalContext) -> list[dict]:
        details, text = result.details, example_texts(context.cfg, context.raw)
        gold, predicted = details["labels"].float().tolist(), details["predictions"].tolist()
        rows = []
        for i in file_order(details):
            error = predicted[i] - gold[i]
            rows.append({**text(int(details["rows"][i])), "gold": gold[i], "predicted": predicted[i], "error": error})
            rows[-1]["loss"] = error * error  # squared error: its mean is the printed loss (MSE)
        return rows

    def track(self, tracker, result: EvalResult, context: EvalContext, step: int) -> None:
        details = result.details
        tracker.figure(
            "eval/predicted_vs_gold", scatter_figure(details["labels"].float(), details["predictions"]), step
        )
        count = context.cfg.train.highest_loss_examples
        if count and context.raw is not None:
            texts = context.raw[context.cfg.data.text_column]
            tracker.text("eval/largest_errors", largest_errors_table(details, texts, count), step)

    def predict(self, model, tokenizer, texts: list[str], batch_size: int, pairs=None) -> list[dict]:
        name, values = model.config.id2label[0], predict_logits(model, tokenizer, texts, batch_size, pairs).squeeze(-1)
        return [{"text": text, name: value} for text, value in zip(texts, values.tolist())]


def check_numeric(ds, split: str, column: str) -> None:
    """Every label is a finite number (or a string holding one); else one line naming the first bad row."""
    for row, value in enumerate(ds[column]):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number):
            raise DataError(
                f"{source_name(ds, split)}: label {value!r} at row {row} is not a number; "
                f"task regression needs a numeric data.label_column ('{column}')"
            )


def _finite(value: float) -> float:
    """A correlation is undefined (NaN) when predictions are constant; report 0 so comparisons still work."""
    return value if math.isfinite(value) else 0.0
