"""Sequence to sequence (translation, summarisation) with an encoder-decoder (T5, BART): teacher-forced cross
entropy per target token, and the scores seq2seq.metrics selects (BLEU, chrF, ROUGE) of generated outputs on a fixed
sample of the evaluated split."""

from __future__ import annotations

import time

import torch
from accelerate.utils import gather_object
from transformers import AutoConfig, AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
from transformers.models.bart.modeling_bart import shift_tokens_right

from ptrain.config.sources import resolve_model_path
from ptrain.data.collate import pad_multiple
from ptrain.errors import ModelError
from ptrain.model.loading import from_config_or_pretrained
from ptrain.tasks.base import EvalContext, EvalResult
from ptrain.tasks.generation_scores import generation_scores
from ptrain.tasks.language_modeling import perplexity
from ptrain.tasks.loss import IGNORE_INDEX, TokenLoss
from ptrain.tasks.seq2seq_declaration import SequenceToSequenceDeclaration
from ptrain.tasks.tables import markdown_table


class SequenceToSequence(SequenceToSequenceDeclaration):
    # transformers 5 removed the "translation" and "text2text-generation" pipelines: exports load with
    # AutoModelForSeq2SeqLM + AutoTokenizer and generate (their generation_config.json holds the settings).
    pipeline = None
    auto_class = AutoModelForSeq2SeqLM

    def columns(self, cfg) -> list[tuple[str, str]]:
        return [("data.text_column", cfg.data.text_column), ("seq2seq.target_column", cfg.seq2seq.target_column)]

    def tokenizer_texts(self, cfg, train):
        """Source and target texts: one vocabulary serves the encoder and the decoder (shared embeddings)."""
        for column in (cfg.data.text_column, cfg.seq2seq.target_column):
            yield from (text for text in train[column] if text)

    def encoder(self, cfg, tokenizer, label_names, ds, split):
        source, target, data, options = cfg.data.text_column, cfg.seq2seq.target_column, cfg.data, cfg.seq2seq

        def encode(batch: dict, indices: list[int]) -> dict:
            sources = [options.source_prefix + text for text in batch[source]]
            encoded = tokenizer(sources, truncation=True, max_length=data.max_length)
            return {
                "input_ids": encoded["input_ids"],
                "attention_mask": encoded["attention_mask"],
                "labels": encode_targets(tokenizer, batch[target], options.max_target_length),
                "idx": indices,
            }

        return encode

    def collator(self, cfg, tokenizer, device: torch.device):
        start, pad = decoder_ids(cfg, tokenizer)
        return Seq2SeqCollator(tokenizer, pad_multiple(cfg.train.mixed_precision, device), start, pad)

    def load_model(self, cfg, label_names, tokenizer):
        start, _ = decoder_ids(cfg, tokenizer)
        scratch = cfg.model.scratch_config
        extra = (
            {"decoder_start_token_id": start}
            if scratch is not None and scratch.get("decoder_start_token_id") is None
            else {}
        )
        model = from_config_or_pretrained(cfg, self.auto_class, tokenizer, **extra)
        generation = model.generation_config  # saved with the export: `ptrain predict` and generate() use it
        generation.max_new_tokens = cfg.seq2seq.generation_max_new_tokens
        generation.num_beams = cfg.seq2seq.generation_num_beams
        generation.length_penalty = cfg.seq2seq.generation_length_penalty
        model.config.prefix = cfg.seq2seq.source_prefix  # in config.json: `ptrain predict` puts it before its texts
        generation.decoder_start_token_id = start
        return model

    def build_loss(self, cfg, splits) -> TokenLoss:
        return TokenLoss(cfg.train.label_smoothing)  # no shift: the decoder inputs are the labels shifted right

    @torch.no_grad()
    def evaluate(self, model, loader, accelerator, context: EvalContext) -> EvalResult:
        """Teacher-forced loss and perplexity over every row, then generation on the first
        seq2seq.generation_eval_rows rows, each process generating its share."""
        start = time.perf_counter()
        teacher_forced, tokens, _ = perplexity(model, loader, accelerator, TokenLoss())
        was_training = model.training
        model.eval()
        details = generate_sample(accelerator.unwrap_model(model), accelerator, context)
        model.train(was_training)
        chosen = dict.fromkeys(context.cfg.seq2seq.metrics)
        metrics = {
            **generation_scores(chosen, details["hypotheses"], details["references"]),
            "loss": teacher_forced["loss"],  # mean cross entropy per real target token
            "perplexity": teacher_forced["perplexity"],
        }
        return EvalResult(metrics, tokens, time.perf_counter() - start, details)

    def track(self, tracker, result: EvalResult, context: EvalContext, step: int) -> None:
        count = context.cfg.seq2seq.generation_examples
        if count:
            tracker.text("eval/generated_examples", generated_table(result.details, count), step)

    @torch.no_grad()
    def predict(self, model, tokenizer, texts: list[str], batch_size: int, pairs=None) -> list[dict]:
        """The generated target of every text, with the export's generation settings and source prefix."""
        model.eval()
        prefix = getattr(model.config, "prefix", None) or ""  # seq2seq.source_prefix of the run that exported it
        sources = [prefix + text for text in texts]
        generated = generate_texts(model, tokenizer, sources, batch_size, max_length=None)  # whole texts
        return [{"text": text, "generated": output} for text, output in zip(texts, generated)]

    def matches_export(self, config) -> bool:
        architectures = set(MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES.values())
        return bool(config.is_encoder_decoder) and any(name in architectures for name in config.architectures or [])


class Seq2SeqCollator:
    """Pads sources with the tokenizer and labels with -100 (DataCollatorForSeq2Seq), and adds the decoder
    inputs: labels shifted right behind the decoder start token, as the model does when given labels (the
    recipe takes the labels out before the forward pass)."""

    same_every_call = True  # evaluation batches may be collated once (ptrain/data/batching.py)

    def __init__(self, tokenizer, pad_to_multiple_of: int | None, decoder_start_id: int, pad_id: int):
        self.pad = DataCollatorForSeq2Seq(
            tokenizer, padding="longest", pad_to_multiple_of=pad_to_multiple_of, label_pad_token_id=IGNORE_INDEX
        )
        self.decoder_start_id, self.pad_id = decoder_start_id, pad_id

    def __call__(self, features: list[dict]) -> dict:
        batch = self.pad(features)
        batch["decoder_input_ids"] = shift_tokens_right(batch["labels"], self.pad_id, self.decoder_start_id)
        return batch


def decoder_ids(cfg, tokenizer) -> tuple[int, int]:
    """(decoder start, pad) ids: a scratch model's from scratch_config, else the tokenizer's pad (T5's rule);
    a pretrained model's from its config."""
    if cfg.model.scratch_config is not None:
        given = cfg.model.scratch_config
        start, pad = given.get("decoder_start_token_id"), given.get("pad_token_id")
        start, pad = (
            (tokenizer.pad_token_id if start is None else start),
            (tokenizer.pad_token_id if pad is None else pad),
        )
    else:
        config = AutoConfig.from_pretrained(resolve_model_path(cfg.model.name_or_path))
        start, pad = getattr(config, "decoder_start_token_id", None), getattr(config, "pad_token_id", None)
    if start is None or pad is None:
        name = cfg.model.name_or_path or "model.scratch_config"
        raise ModelError(
            f"{name}: no decoder_start_token_id or pad_token_id; set them in model.scratch_config "
            "or use a tokenizer with a pad token"
        )
    return start, pad


def encode_targets(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Target ids ending in EOS (generation stops there), whether or not the tokenizer adds it itself."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ModelError("a seq2seq tokenizer needs an eos token (model.train_tokenizer has one)")
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return [row if row[-1:] == [eos] else row[: max_length - 1] + [eos] for row in ids]


def generate_sample(model, accelerator, context: EvalContext) -> dict:
    """Sources, references and generated hypotheses of the first seq2seq.generation_eval_rows rows (all
    processes): each process generates every num_processes-th row, then the rows are gathered in order."""
    cfg, raw = context.cfg, context.raw
    rows = list(range(min(cfg.seq2seq.generation_eval_rows, len(raw))))
    mine = rows[accelerator.process_index :: accelerator.num_processes]
    sources = [cfg.seq2seq.source_prefix + text for text in raw.select(mine)[cfg.data.text_column]] if mine else []
    hypotheses = generate_texts(model, context.tokenizer, sources, cfg.train.eval_batch_size, cfg.data.max_length)
    gathered = sorted(
        gather_object(list(zip(mine, hypotheses))) if accelerator.num_processes > 1 else zip(mine, hypotheses)
    )
    sample = raw.select(rows)
    return {
        "sources": sample[cfg.data.text_column],
        "references": sample[cfg.seq2seq.target_column],
        "hypotheses": [hypothesis for _, hypothesis in gathered],
    }


def generate_texts(model, tokenizer, texts: list[str], batch_size: int, max_length: int | None) -> list[str]:
    """model.generate with its generation_config, in batches of similar length (sources cut to max_length
    tokens unless None); outputs in input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    outputs: list[str] = [""] * len(texts)
    device = next(model.parameters()).device
    for begin in range(0, len(order), batch_size):
        chunk = order[begin : begin + batch_size]
        encoded = tokenizer(
            [texts[i] for i in chunk],
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        generated = model.generate(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
        for i, text in zip(chunk, tokenizer.batch_decode(generated, skip_special_tokens=True)):
            outputs[i] = text.strip()
    return outputs


def generated_table(details: dict, count: int) -> str:
    """A markdown table of the first `count` sampled rows: source, reference and the model's output."""
    rows = list(zip(details["sources"], details["references"], details["hypotheses"]))[:count]
    return markdown_table(["source", "reference", "generated"], rows)
