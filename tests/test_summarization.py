"""Summarisation in task seq2seq: ROUGE scores (rouge-score's own values, one checked by hand), seq2seq.metrics
selecting what a run reports and train.metric_for_best may name, and seq2seq.source_prefix reaching the tokenized
sources, the export and `ptrain predict`. The runs use the Europarl pairs (no summarisation set is shared): what is
tested is the wiring, not a summary's quality."""

from __future__ import annotations

import json

import datasets
import pytest
from rouge_score import rouge_scorer
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from ptrain.errors import ConfigError
from ptrain.model.tokenizer_training import train_bpe
from ptrain.tasks import get_task, load_config
from ptrain.tasks.generation_scores import generation_scores
from ptrain.training.best import BestRule
from tests.conftest import CONFIGS, DATA_DIR, run_cli, scalar_values

CONFIG = str(CONFIGS / "tiny_seq2seq.yaml")
ROUGE = ["rougeL", "rouge1", "rouge2", "rougeLsum"]
PREFIX = "summarize: "
REFERENCES = ["the cat sat on the mat", "police killed the gunman", "a b c\nd e"]
HYPOTHESES = ["the cat on the mat", "the gunman was shot dead by police", "d e\na b c"]


def test_rouge_of_known_strings_is_rouge_scores_own_mean_f_measure_times_100():
    scorer = rouge_scorer.RougeScorer(ROUGE, use_stemmer=True)
    pairs = [scorer.score(reference, hypothesis) for reference, hypothesis in zip(REFERENCES, HYPOTHESES)]
    expected = {name: 100 * sum(pair[name].fmeasure for pair in pairs) / len(pairs) for name in ROUGE}
    scores = generation_scores(ROUGE, HYPOTHESES, REFERENCES)
    assert list(scores) == ROUGE and scores == pytest.approx(expected, abs=1e-9)
    assert scores["rougeLsum"] > scores["rougeL"]  # the third pair's sentences (lines) match in swapped order


def test_rouge_1_of_one_pair_checked_by_hand():
    """Reference 6 words, hypothesis 5, all 5 in the reference: P 1, R 5/6, F 2PR/(P+R) = 10/11. Bigrams: 3 of the
    hypothesis' 4 in the reference's 5: F = 2/3. Stemming: "sits" and "sitting" are one word."""
    scores = generation_scores(["rouge1", "rouge2", "bleu"], ["the cat on the mat"], ["the cat sat on the mat"])
    assert scores["rouge1"] == pytest.approx(100 * 10 / 11) and scores["rouge2"] == pytest.approx(100 * 2 / 3)
    assert list(scores) == ["rouge1", "rouge2", "bleu"] and 0 < scores["bleu"] < 100
    assert generation_scores(["rouge1"], ["he sits"], ["he is sitting"])["rouge1"] == pytest.approx(100 * 4 / 5)


def test_a_metric_for_best_the_config_does_not_report_is_refused_in_one_line(tmp_path):
    result = run_cli("check", CONFIG, "seq2seq.metrics=[rougeL,rouge1]", "train.metric_for_best=bleu")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert (
        "train.metric_for_best 'bleu' is not a seq2seq metric; choose one of rougeL, rouge1, loss, perplexity "
        "or select it in seq2seq.metrics" in result.stderr
    )
    with pytest.raises(ConfigError, match="'seq2seq.metrics.0' input should be 'bleu', 'chrf', 'rouge1'"):
        load_config(CONFIG, ["seq2seq.metrics=[rouge3]"])
    cfg = load_config(CONFIG, ["seq2seq.metrics=[rougeLsum,bleu]"])  # no metric_for_best: the first selected
    assert BestRule.of(cfg, get_task("seq2seq")).metric == "rougeLsum"
    assert BestRule.of(load_config(CONFIG), get_task("seq2seq")).metric == "bleu"  # the default seq2seq.metrics


def test_the_source_prefix_reaches_the_tokenized_sources():
    lines = (DATA_DIR / "europarl_en_fr" / "europarl_en-fr_5000.csv").read_text().splitlines()[1:300]
    tokenizer = train_bpe([*lines, PREFIX] * 2, vocab_size=400, min_frequency=2)
    cfg = load_config(CONFIG, [f"seq2seq.source_prefix='{PREFIX}'"])
    rows = datasets.Dataset.from_dict({"en_text": ["Thank you.", "Yes"], "fr_text": ["Merci.", "Oui"]})
    encoded = get_task("seq2seq").encoder(cfg, tokenizer, [], rows, "train")(rows[:], [0, 1])
    decoded = [tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") for ids in encoded["input_ids"]]
    assert decoded == ["summarize:Thankyou.", "summarize:Yes"]
    unprefixed = get_task("seq2seq").encoder(load_config(CONFIG), tokenizer, [], rows, "train")(rows[:], [0, 1])
    assert [len(ids) for ids in unprefixed["input_ids"]] < [len(ids) for ids in encoded["input_ids"]]


@pytest.fixture(scope="module")
def rouge_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("summarization")
    result = run_cli(
        "train",
        CONFIG,
        f"output_dir={tmp / 'runs'}",
        f"data.cache_dir={tmp / 'cache'}",
        "train.epochs=2",
        f"seq2seq.metrics=[{','.join(ROUGE)}]",
        "train.metric_for_best=rougeL",
        f"seq2seq.source_prefix='{PREFIX}'",
        "seq2seq.generation_num_beams=2",
        "seq2seq.generation_length_penalty=0.5",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    (run_dir,) = (tmp / "runs" / "tiny_seq2seq").iterdir()
    return run_dir, result, tmp


@pytest.mark.slow
def test_a_run_with_rouge_selected_reports_it_in_metrics_json_tensorboard_and_ptrain_runs(rouge_run):
    run_dir, result, tmp = rouge_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for kind in ("best", "final"):
        assert set(ROUGE) <= set(metrics[kind]) and not {"bleu", "chrf"} & set(metrics[kind])
        assert all(0 <= metrics[kind][name] <= 100 for name in ROUGE)
    assert "ptrain: best rougeL" in result.stdout and "Traceback" not in result.stderr
    assert len(scalar_values(run_dir, "eval/rougeLsum")) == 2  # one evaluation per epoch
    with pytest.raises(KeyError):
        scalar_values(run_dir, "eval/bleu")
    table = run_cli("runs", str(tmp / "runs"), "--format", "json")
    assert table.returncode == 0, table.stderr[-2000:]
    columns = json.loads(table.stdout)["metric_columns"]
    assert "best_rougeL" in columns and "final_rouge2" in columns and "best_bleu" not in columns


@pytest.mark.slow
def test_the_export_keeps_the_prefix_and_generation_settings_and_predict_puts_the_prefix_first(rouge_run):
    run_dir, _, tmp = rouge_run
    folder = run_dir / "best"
    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert model.config.prefix == PREFIX
    assert model.generation_config.num_beams == 2 and model.generation_config.length_penalty == 0.5

    class Recording:
        """The export's tokenizer, noting the texts it is given."""

        def __init__(self):
            self.texts: list[str] = []

        def __call__(self, texts, **kwargs):
            self.texts.extend(texts)
            return tokenizer(texts, **kwargs)

        def __getattr__(self, name):
            return getattr(tokenizer, name)

    recording = Recording()
    rows = get_task("seq2seq").predict(model, recording, ["The Commission agrees."], batch_size=4)
    assert recording.texts == [PREFIX + "The Commission agrees."] and rows[0]["text"] == "The Commission agrees."
    source = tmp / "sources.txt"
    source.write_text("The Commission agrees.\n")
    result = run_cli("predict", "--model", str(folder), "--input", str(source))
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["text"] == "The Commission agrees." and row["generated"] == rows[0]["generated"]
