"""task seq2seq: a tiny T5 from scratch on 200 Europarl EN-FR pairs through the real CLI (train, TensorBoard,
export, predict, eval on one and two processes), and the pieces the loss depends on."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from ptrain.data.splits import load_raw_splits
from ptrain.errors import ConfigError, DataError
from ptrain.model.tokenizer_training import train_bpe
from ptrain.tasks import get_task, load_config
from ptrain.tasks.seq2seq import Seq2SeqCollator, TokenLoss, encode_targets
from tests.conftest import CONFIGS, DATA_DIR, accelerate_launch, run_cli
from tests.test_cli_end_to_end import events

CONFIG = str(CONFIGS / "tiny_seq2seq.yaml")
METRICS = ("bleu", "chrf", "loss", "perplexity")


@pytest.fixture(scope="module")
def seq2seq_cache(tmp_path_factory):
    """Not the shared cache_dir: other tests count the tokenizers trained there."""
    return tmp_path_factory.mktemp("seq2seq_cache")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, seq2seq_cache):
    tmp, cache_dir = tmp_path_factory.mktemp("seq2seq"), seq2seq_cache
    result = run_cli("train", CONFIG, f"output_dir={tmp / 'runs'}", f"data.cache_dir={cache_dir}")
    assert result.returncode == 0, result.stderr[-4000:]
    (run_dir,) = (tmp / "runs" / "tiny_seq2seq").iterdir()
    return run_dir, result, tmp


@pytest.mark.slow
def test_loss_falls_and_generation_metrics_reach_metrics_json_and_tensorboard(trained):
    run_dir, result, _ = trained
    assert "skipped 14 bad rows (data.bad_rows=skip)" in result.stdout  # 14 pairs with an empty side
    acc = events(run_dir)
    losses = [event.value for event in acc.Scalars("train/loss")]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    assert {f"eval/{name}" for name in METRICS} <= set(acc.Tags()["scalars"])
    eval_losses = [event.value for event in acc.Scalars("eval/loss")]
    assert eval_losses[-1] < eval_losses[0]
    table = acc.Tensors("eval/generated_examples/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert table.startswith("| source | reference | generated |") and table.count("\n") == 6  # 5 rows
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in METRICS:
        assert name in metrics["final"] and name in metrics["best"]
    assert 0 <= metrics["final"]["bleu"] <= 100 and 0 < metrics["final"]["chrf"] <= 100
    assert metrics["final"]["perplexity"] == pytest.approx(
        torch.tensor(metrics["final"]["loss"]).exp().item(), rel=1e-5
    )
    assert "ptrain: best bleu" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.slow
def test_export_loads_with_its_generation_settings_and_generates(trained):
    """transformers 5 has no translation/text2text-generation pipeline: the export loads with the Auto classes."""
    run_dir, _, _ = trained
    folder = run_dir / "final"
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForSeq2SeqLM.from_pretrained(folder)
    assert (
        model.generation_config.max_new_tokens == 16
        and model.generation_config.decoder_start_token_id == tokenizer.pad_token_id
    )
    generated = model.generate(**tokenizer(["The Commission agrees."], return_tensors="pt"))
    assert generated.shape[1] <= 1 + 16 and generated[0, 0] == tokenizer.pad_token_id
    assert isinstance(tokenizer.decode(generated[0], skip_special_tokens=True), str)


@pytest.mark.slow
def test_predict_writes_the_generated_target_of_every_row(trained):
    run_dir, _, tmp = trained
    source = tmp / "sources.csv"
    source.write_text('en\nThe Commission agrees.\n"Thank you, Mr President."\n')
    result = run_cli("predict", "--model", str(run_dir / "best"), "--input", str(source), "--text-column", "en")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["text"] for row in rows] == ["The Commission agrees.", "Thank you, Mr President."]
    assert all(isinstance(row["generated"], str) for row in rows)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_eval_of_the_export_gives_the_same_scores_on_one_and_two_processes(trained, seq2seq_cache):
    """Two processes split the teacher-forced rows (gather_for_metrics) and the generated sample (gather_object):
    the metrics of the whole split must not change. fp32 so that batch composition cannot move a greedy choice."""
    run_dir, _, _ = trained
    args = [
        "eval",
        CONFIG,
        f"data.cache_dir={seq2seq_cache}",
        "train.mixed_precision='no'",
        "data.max_eval_rows=39",
        "train.eval_batch_size=8",
        "seq2seq.generation_eval_rows=15",
        "--model",
        str(run_dir / "final"),
    ]
    one = run_cli(*args)
    assert one.returncode == 0, one.stderr[-3000:]
    two = accelerate_launch(["--multi_gpu", "--num_processes", "2"], "ptrain", *args)
    assert two.returncode == 0, two.stderr[-3000:]
    one_metrics = json.loads(one.stdout)
    two_metrics, _ = json.JSONDecoder().raw_decode(two.stdout[two.stdout.index("{") :])
    assert set(one_metrics) == set(METRICS) and two.stdout.count('"loss"') == 2  # each of the 2 processes printed
    assert two_metrics["loss"] == pytest.approx(one_metrics["loss"], rel=1e-4)
    assert two_metrics["bleu"] == pytest.approx(one_metrics["bleu"], abs=1e-6)
    assert two_metrics["chrf"] == pytest.approx(one_metrics["chrf"], abs=1e-6)


@pytest.fixture(scope="module")
def tokenizer():
    lines = (DATA_DIR / "europarl_en_fr" / "europarl_en-fr_5000.csv").read_text().splitlines()[1:300]
    return train_bpe(lines, vocab_size=400, min_frequency=2)


def test_targets_end_in_eos_and_the_collator_shifts_them_into_decoder_inputs(tokenizer):
    targets = encode_targets(tokenizer, ["Merci beaucoup.", "Oui"], max_length=4)
    assert all(row[-1] == tokenizer.eos_token_id and len(row) <= 4 for row in targets)
    features = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": targets[0], "idx": 0},
        {"input_ids": [8], "attention_mask": [1], "labels": targets[1], "idx": 1},
    ]
    batch = Seq2SeqCollator(tokenizer, None, decoder_start_id=0, pad_id=0)(features)
    labels, decoder_inputs = batch["labels"], batch["decoder_input_ids"]
    assert labels.shape == decoder_inputs.shape == (2, len(targets[0]))
    assert labels[1, len(targets[1]) :].eq(-100).all()  # padded labels are ignored by the loss
    assert decoder_inputs[:, 0].eq(0).all()
    assert decoder_inputs[0, 1:].tolist() == targets[0][:-1]
    assert batch["attention_mask"][1].tolist() == [1, 0, 0]


def test_token_loss_is_summed_over_real_targets_and_weighed_by_their_count():
    logits = torch.randn(2, 3, 11)
    labels = torch.tensor([[1, 2, -100], [4, -100, -100]])
    loss_fn = TokenLoss()
    mean = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1))
    assert loss_fn.target_weight(labels).item() == 3
    assert loss_fn(logits, labels).item() == pytest.approx(mean.item() * 3, rel=1e-5)


def test_seq2seq_configs_need_a_target_column():
    with pytest.raises(ConfigError, match="task seq2seq needs seq2seq.target_column"):
        load_config(CONFIG, ["seq2seq.target_column=null"])
    with pytest.raises(ConfigError, match="seq2seq.target_column and data.text_column are both 'en_text'"):
        load_config(CONFIG, ["seq2seq.target_column=en_text"])
    with pytest.raises(ConfigError, match="section 'seq2seq' is for task seq2seq"):
        load_config(CONFIGS / "tiny.yaml", ["seq2seq.target_column=fr_text"])
    with pytest.raises(ConfigError, match="'data.target_column' has moved to 'seq2seq.target_column'"):
        load_config(CONFIGS / "tiny.yaml", ["data.target_column=fr_text"])
    with pytest.raises(ConfigError, match="bleu, chrf, loss, perplexity"):
        load_config(CONFIG, ["train.metric_for_best=accuracy"])
    assert get_task("seq2seq").metrics[0] == "bleu"  # the default metric_for_best


def test_a_missing_target_column_is_named():
    cfg = load_config(CONFIG, ["seq2seq.target_column=de_text"])
    with pytest.raises(DataError, match=r"seq2seq.target_column 'de_text' not in .* columns \['en_text', 'fr_text'\]"):
        load_raw_splits(cfg, get_task(cfg.task))
