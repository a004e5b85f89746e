"""Questions and contexts as model windows: each question with its context, a long context cut into overlapping
windows (question_answering.doc_stride); per window the answer's start and end tokens (the first token, [CLS], when
the answer is not whole inside it) and, for evaluation and prediction, each token's character span in the context
(-1 outside it)."""

from __future__ import annotations

from dataclasses import dataclass

from ptrain.data.labels import source_name
from ptrain.errors import DataError

OUTSIDE_CONTEXT = (-1, -1)


@dataclass(frozen=True)
class Answers:
    """A question's gold answers: their texts and character spans [start, end) in its context."""

    texts: list[str]
    spans: list[tuple[int, int]]


def answer_texts(value) -> list[str]:
    """A row's gold answer texts: SQuAD's {text: [...], ...}, or one answer text."""
    return list(value.get("text") or []) if isinstance(value, dict) else [str(value)]


def gold_answers(ds, split: str, options) -> list[Answers]:
    """Every row's answers, checked: each text is found where its offset says (or, without offsets, at its first
    occurrence), and a row without one is refused unless question_answering.unanswerable."""
    contexts, values = ds[options.context_column], ds[options.answers_column]
    starts = ds[options.answer_start_column] if options.answer_start_column else None
    rows = []
    for row, (context, value) in enumerate(zip(contexts, values)):
        texts = answer_texts(value)
        if isinstance(value, dict):  # SQuAD: {text: [...], answer_start: [...]}
            offsets = list(value.get("answer_start") or [])
        else:
            offsets = [int(starts[row])] if starts is not None else [context.find(texts[0])]
        if len(texts) != len(offsets):
            raise DataError(_bad(ds, split, row, "has answer texts and answer_start lists of different lengths"))
        if not texts and not options.unanswerable:
            raise DataError(
                _bad(ds, split, row, "has no answer")
                + "; for SQuAD 2.0-style data set question_answering.unanswerable=true"
            )
        for text, start in zip(texts, offsets):
            if start < 0 or context[start : start + len(text)] != text:
                where = f"at character {start}" if start >= 0 else "anywhere"
                problem = f"has the answer {text!r}, which its context does not hold {where}"
                raise DataError(_bad(ds, split, row, problem))
        rows.append(Answers(texts, [(start, start + len(text)) for text, start in zip(texts, offsets)]))
    return rows


def _bad(ds, split: str, row: int, problem: str) -> str:
    """Rows are counted in the split (after any held-out split); the id, when the data has one, names the question."""
    named = f" (id {ds[row]['id']})" if "id" in ds.column_names else ""
    return f"{source_name(ds, split)}: row {row}{named} {problem}"


def encode_windows(
    tokenizer,
    questions: list[str],
    contexts: list[str],
    max_length: int,
    stride: int,
    where: str = "--input",
    first_row: int = 0,
    ids: list | None = None,
):
    """The windows of every (question, context): a BatchEncoding with `overflow_to_sample_mapping` (window ->
    question) and `offset_mapping`. Leading spaces of questions are dropped (some SQuAD questions have hundreds,
    which would crowd out the context). A question too long to leave room for a window is refused, naming
    `where`, its row (first_row + position in the split) and its id (`ids`, when the data has them)."""
    questions = [question.lstrip() for question in questions]
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - stride  # question tokens at most
    lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
    longest = max(range(len(questions)), key=lengths.__getitem__, default=None)
    if longest is not None and lengths[longest] >= room:  # the tokenizer would panic: no window could advance
        raise DataError(
            f"{where}: the question of row {first_row + longest}{f' (id {ids[longest]})' if ids else ''} has "
            f"{lengths[longest]} tokens; with "
            f"data.max_length={max_length} and question_answering.doc_stride={stride} a question may have {room - 1} "
            "at most: raise data.max_length, lower doc_stride or shorten the question"
        )
    return tokenizer(
        questions,
        contexts,
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def window_labels(encoded, window: int, answer: tuple[int, int] | None) -> list[int]:
    """[start token, end token] of the answer in the window, or [0, 0] (the first token) when the window does not
    hold all of it or there is none."""
    sequence_ids, offsets = encoded.sequence_ids(window), encoded["offset_mapping"][window]
    first = sequence_ids.index(1)
    last = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
    if answer is None or not (offsets[first][0] <= answer[0] and answer[1] <= offsets[last][1]):
        return [0, 0]
    start = first
    while start <= last and offsets[start][0] <= answer[0]:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= answer[1]:
        end -= 1
    return [start - 1, end + 1]


def context_offsets(encoded, window: int) -> list[tuple[int, int]]:
    """Each token's character span in the context; OUTSIDE_CONTEXT for the question, special tokens and padding."""
    sequence_ids = encoded.sequence_ids(window)
    return [
        tuple(span) if sequence == 1 else OUTSIDE_CONTEXT
        for span, sequence in zip(encoded["offset_mapping"][window], sequence_ids)
    ]
