"""SQuAD JSON files as released (`{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}`, v1.1 and 2.0):
one row per question, in the columns of the Hub's `squad` dataset (id, title, context, question, answers with its
`text` and `answer_start` lists), so a SQuAD file and the Hub dataset train with the same config."""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset, Features, Sequence, Value

from ptrain.errors import DataError

FEATURES = Features(
    {
        "id": Value("string"),
        "title": Value("string"),
        "context": Value("string"),
        "question": Value("string"),
        "answers": {"text": Sequence(Value("string")), "answer_start": Sequence(Value("int32"))},
    }
)


def read_squad(path: Path, encoding: str) -> Dataset:
    """Every question of the file, in file order; an unanswerable question (SQuAD 2.0's is_impossible) has empty
    answer lists."""
    try:
        articles = json.loads(path.read_text(encoding=encoding))["data"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read it as SQuAD JSON ({err}); check the file and data.encoding") from None
    except (KeyError, TypeError):
        raise DataError(f'{path}: not SQuAD JSON: no top-level "data" list of articles') from None
    rows: dict[str, list] = {name: [] for name in FEATURES}
    try:
        for article in articles:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    answers = [] if qa.get("is_impossible") else qa["answers"]
                    rows["id"].append(str(qa["id"]))
                    rows["title"].append(article.get("title", ""))
                    rows["context"].append(paragraph["context"])
                    rows["question"].append(qa["question"])
                    rows["answers"].append(
                        {"text": [a["text"] for a in answers], "answer_start": [a["answer_start"] for a in answers]}
                    )
    except (KeyError, TypeError) as err:
        raise DataError(
            f"{path}: question {len(rows['id']) + 1} is not SQuAD-shaped (missing {err}); each article needs "
            "paragraphs, each paragraph a context and qas, each question an id, a question and answers"
        ) from None
    if not rows["id"]:
        raise DataError(f"{path}: no question in it")
    ds = Dataset.from_dict(rows, features=FEATURES)
    ds.info.description = str(path)
    return ds
