"""CoNLL column files (`TOKEN ... TAG` per line, blank lines between sentences) as a Dataset of word and tag lists."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from ptrain.errors import DataError

DOCUMENT_START = "-DOCSTART-"


def read_conll(path: Path, words_column: str, tags_column: str, encoding: str = "utf-8") -> Dataset:
    """One row per sentence: the first field of each line is the word, the last its tag; `-DOCSTART-` lines
    (document boundaries, not words) are skipped."""
    sentences, words, tags = [], [], []
    try:
        lines = path.read_text(encoding=encoding).splitlines()
    except UnicodeDecodeError as bad:
        raise DataError(
            f"{path}: not valid {encoding} (byte offset {bad.start}); convert the file or set data.encoding"
        ) from None
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        if fields[0] == DOCUMENT_START:
            continue
        if len(fields) < 2:
            raise DataError(f"{path}: line {number} has one field ({line.strip()!r}); CoNLL lines are 'WORD ... TAG'")
        words.append(fields[0])
        tags.append(fields[-1])
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise DataError(
            f"{path}: no sentences; a CoNLL file has 'WORD ... TAG' lines with blank lines between sentences"
        )
    ds = Dataset.from_dict({words_column: [s[0] for s in sentences], tags_column: [s[1] for s in sentences]})
    ds.info.description = str(path)
    return ds
