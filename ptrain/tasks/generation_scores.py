"""Scores of generated texts against their references, by kept implementations: sacrebleu's corpus BLEU and chrF,
and rouge-score's ROUGE-1/2/L/Lsum (the mean per-pair F-measure, Porter-stemmed, as Google's scorer reports it).
Every score is 0-100."""

from __future__ import annotations

import sacrebleu

ROUGE_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def generation_scores(names, hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """{name: score} for the named metrics (seq2seq.metrics), in their order."""
    rouge_names = [name for name in names if name in ROUGE_METRICS]
    scores = rouge(rouge_names, hypotheses, references) if rouge_names else {}
    for name in names:
        if name == "bleu":
            scores[name] = sacrebleu.corpus_bleu(hypotheses, [references]).score
        elif name == "chrf":
            scores[name] = sacrebleu.corpus_chrf(hypotheses, [references]).score
    return {name: scores[name] for name in names}


def rouge(names: list[str], hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Mean F-measure x 100 of each ROUGE type over the pairs (0 for none). rougeLsum splits texts at newlines
    (sentences one per line); texts without newlines score as rougeL. rouge-score's tokenizer lowercases and keeps
    ASCII letters and digits only: ROUGE is for English targets."""
    from rouge_score import rouge_scorer  # imports nltk (about 1 s): only for configs that select ROUGE

    scorer = rouge_scorer.RougeScorer(names, use_stemmer=True)
    totals = dict.fromkeys(names, 0.0)
    for hypothesis, reference in zip(hypotheses, references):
        for name, score in scorer.score(reference, hypothesis).items():
            totals[name] += score.fmeasure
    return {name: 100 * total / max(len(hypotheses), 1) for name, total in totals.items()}
