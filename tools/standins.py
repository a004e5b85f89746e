"""Derive the multi-label stand-in from CoNLL-2003: each sentence (its tokens joined by spaces) labelled with the
entity types it contains (any of LOC, MISC, ORG, PER; none for a sentence without entities).

    python tools/standins.py [CONLL_DIR] [OUT_DIR]     # defaults: ../shared/data/conll2003, runs/standins/conll_entity_types

Writes train.jsonl, valid.jsonl and test.jsonl ({"text": ..., "labels": [...]}) into OUT_DIR; the data itself is
never copied into the repository (runs/ is ignored by git). Takes about a second.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONLL = REPO.parent / "shared" / "data" / "conll2003"
DEFAULT_OUT = REPO / "runs" / "standins" / "conll_entity_types"
SPLITS = ("train", "valid", "test")


def sentences(path: Path):
    """(tokens, tags) per sentence; -DOCSTART- lines are document boundaries, not sentences."""
    tokens, tags = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if tokens:
                yield tokens, tags
            tokens, tags = [], []
            continue
        tokens.append(fields[0])
        tags.append(fields[-1])
    if tokens:
        yield tokens, tags


def derive(conll_dir: Path = DEFAULT_CONLL, out_dir: Path = DEFAULT_OUT) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        rows = []
        for tokens, tags in sentences(conll_dir / f"{split}.txt"):
            types = sorted({tag.split("-", 1)[1] for tag in tags if tag != "O"})
            rows.append(json.dumps({"text": " ".join(tokens), "labels": types}))
        tmp = out_dir / f"{split}.jsonl.tmp"
        tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
        tmp.replace(out_dir / f"{split}.jsonl")
    return out_dir


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:3]]
    print(derive(*args))
