"""From start and end scores to answers, and answers to scores. On the device, per window: the n best start and
end tokens of the context and their character offsets (a fixed-size result, gathered from every process). On the
host, per question over all its windows: the best valid span (end not before start, at most max_answer_length
tokens), its probability among the question's n best spans, and no answer when the question may have none and the
first token outscores it. Exact match and F1 are the official SQuAD v1.1 ones (torchmetrics' implementation of the
script, with its normalisation); a question without gold answers scores 100 for no answer, as SQuAD 2.0's does."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.text import squad

SPAN_KEYS = ("start_scores", "start_tokens", "start_chars", "end_scores", "end_tokens", "end_chars", "null_scores")


def top_spans(logits: torch.Tensor, offsets: torch.Tensor, n_best: int) -> dict[str, torch.Tensor]:
    """logits (windows, tokens, 2: start and end), offsets (windows, tokens, 2; -1 outside the context) -> the n_best
    highest-scoring context tokens as starts and as ends (windows, n_best), their character offsets, and the
    no-answer score (first token as start and end)."""
    null = logits[:, 0, 0] + logits[:, 0, 1]
    inside = (offsets[..., 0] >= 0).unsqueeze(-1)
    scores = logits.float().masked_fill(~inside, float("-inf"))
    if scores.shape[1] < n_best:  # a batch of short windows: pad the token axis with impossible tokens
        missing = n_best - scores.shape[1]
        scores = F.pad(scores, (0, 0, 0, missing), value=float("-inf"))
        offsets = F.pad(offsets, (0, 0, 0, missing), value=-1)
    start_scores, start_tokens = scores[..., 0].topk(n_best, dim=1)
    end_scores, end_tokens = scores[..., 1].topk(n_best, dim=1)
    return {
        "start_scores": start_scores,
        "start_tokens": start_tokens,
        "start_chars": offsets[..., 0].gather(1, start_tokens),
        "end_scores": end_scores,
        "end_tokens": end_tokens,
        "end_chars": offsets[..., 1].gather(1, end_tokens),
        "null_scores": null.float(),
    }


def best_answers(spans: dict[str, np.ndarray], rows: np.ndarray, contexts: Sequence[str], options) -> dict[int, dict]:
    """Per question (raw row) among `rows`: {answer, score (its probability among the n best spans, with no answer
    when allowed), start, end (characters; -1 for no answer)}."""
    starts, ends = spans["start_tokens"][:, :, None], spans["end_tokens"][:, None, :]
    total = spans["start_scores"][:, :, None] + spans["end_scores"][:, None, :]  # (windows, n_best, n_best)
    valid = (ends >= starts) & (ends - starts < options.max_answer_length) & np.isfinite(total)
    total = np.where(valid, total, -np.inf).reshape(len(total), -1)
    keep = min(options.n_best, total.shape[1])
    best = np.argpartition(-total, keep - 1, axis=1)[:, :keep]  # each window's n best spans, unordered
    by_row: dict[int, list[int]] = {}
    for window, row in enumerate(rows.tolist()):
        by_row.setdefault(row, []).append(window)
    return {row: _answer(spans, total, best, windows, contexts[row], options) for row, windows in by_row.items()}


def _answer(spans, total, best, windows: list[int], context: str, options) -> dict:
    n_best = spans["start_tokens"].shape[1]
    candidates = [
        (float(total[w, flat]), int(spans["start_chars"][w, flat // n_best]), int(spans["end_chars"][w, flat % n_best]))
        for w in windows
        for flat in best[w].tolist()
        if np.isfinite(total[w, flat])
    ]
    candidates = sorted(candidates, reverse=True)[: options.n_best]
    null = float(min(spans["null_scores"][w] for w in windows))
    scores = [score for score, _, _ in candidates] + ([null] if options.unanswerable else [])
    if not scores:
        return {"answer": "", "score": 0.0, "start": -1, "end": -1}
    probabilities = torch.tensor(scores, dtype=torch.float64).softmax(0).tolist()
    if not candidates or (options.unanswerable and null > candidates[0][0] + options.null_score_margin):
        return {"answer": "", "score": probabilities[-1], "start": -1, "end": -1}
    _, start, end = candidates[0]
    return {"answer": context[start:end], "score": probabilities[0], "start": start, "end": end}


def squad_scores(predicted: Sequence[str], gold: Sequence[Sequence[str]]) -> tuple[list[float], list[float]]:
    """Per question: exact match and F1 (0-100) against its best-matching gold answer."""
    exact, f1 = [], []
    for answer, answers in zip(predicted, gold):
        if not answers:  # unanswerable: right only when no answer is given
            exact.append(100.0 * (answer == ""))
            f1.append(100.0 * (answer == ""))
            continue
        scores = squad([{"prediction_text": answer, "id": "q"}], [{"answers": {"text": list(answers)}, "id": "q"}])
        exact.append(float(scores["exact_match"]))
        f1.append(float(scores["f1"]))
    return exact, f1
