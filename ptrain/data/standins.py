"""The multi-label stand-in, derived from CoNLL-2003: each sentence (its words joined by spaces) labelled with the
entity types it contains (any of LOC, MISC, ORG, PER; none for a sentence without entities).

    python -m ptrain.data.standins [CONLL_DIR] [OUT_DIR]

CONLL_DIR defaults to ../shared/data/conll2003, OUT_DIR to runs/standins/conll_entity_types.

Writes train.jsonl, valid.jsonl and test.jsonl ({"text": ..., "labels": [...]}) into OUT_DIR (runs/ is ignored
by git: the data never enters the repository). Takes about a second.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ptrain.data.conll import read_conll
from ptrain.files.atomic import written_through

DEFAULT_CONLL = Path("../shared/data/conll2003")
DEFAULT_OUT = Path("runs/standins/conll_entity_types")
SPLITS = ("train", "valid", "test")


def derive(conll_dir: Path = DEFAULT_CONLL, out_dir: Path = DEFAULT_OUT) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        sentences = read_conll(conll_dir / f"{split}.txt", "words", "tags")
        rows = [
            json.dumps(
                {"text": " ".join(words), "labels": sorted({tag.split("-", 1)[1] for tag in tags if tag != "O"})}
            )
            for words, tags in zip(sentences["words"], sentences["tags"])
        ]
        tmp = out_dir / f"{split}.jsonl.tmp{os.getpid()}"  # two test workers may derive at once
        with written_through(out_dir / f"{split}.jsonl", tmp) as path:
            path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out_dir


if __name__ == "__main__":
    print(derive(*[Path(arg) for arg in sys.argv[1:3]]))
