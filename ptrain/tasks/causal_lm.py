"""Causal language modelling: a corpus packed into fixed blocks, or prompt/response rows padded per example with
no loss on the prompt; perplexity on validation and sampled continuations of fixed prompts in TensorBoard."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, DataCollatorForTokenClassification

from ptrain.data.collate import pad_multiple
from ptrain.errors import ModelError
from ptrain.model.loading import from_config_or_pretrained
from ptrain.tasks.base import EvalContext, EvalResult
from ptrain.tasks.declarations import CausalLMDeclaration
from ptrain.tasks.generation import Sampling, continue_prompts, samples_table
from ptrain.tasks.language_modeling import TokenLoss, perplexity_result
from ptrain.tasks.loss import IGNORE_INDEX
from ptrain.tasks.packing import pack_blocks


class CausalLM(CausalLMDeclaration):
    pipeline = "text-generation"
    auto_class = AutoModelForCausalLM

    def columns(self, cfg) -> list[tuple[str, str]]:
        wanted = [("data.text_column", cfg.data.text_column)]
        if self.options(cfg).prompt_column:
            wanted.append(("causal_lm.prompt_column", self.options(cfg).prompt_column))
        return wanted

    def encoder(self, cfg, tokenizer, label_names, ds, split):
        """Every text ends in EOS (the model learns where a document stops). Packed: the texts concatenated and cut
        into blocks of causal_lm.block_size; otherwise one row each, truncated at data.max_length, labels -100 on the
        prompt tokens. Labels are the inputs: the loss shifts them."""
        ensure_pad_token(tokenizer)
        data, options, eos = cfg.data, self.options(cfg), tokenizer.eos_token_id
        if eos is None:  # it would end every document as None: a traceback at the first batch
            raise ModelError(
                f"causal_lm: the tokenizer ({type(tokenizer).__name__}, {tokenizer.name_or_path}) has no EOS token, "
                "which ends every document; use a tokenizer with one (a causal LM's), or model.train_tokenizer"
            )

        def encode(batch: dict, indices: list[int]) -> dict:
            texts = tokenizer(batch[data.text_column], add_special_tokens=False)["input_ids"]
            if options.packing:
                packed = pack_blocks([ids + [eos] for ids in texts], options.block_size, indices)
                return {**packed, "labels": packed["input_ids"]}
            prompts = (
                tokenizer(batch[options.prompt_column], add_special_tokens=False)["input_ids"]
                if options.prompt_column
                else [[] for _ in texts]
            )
            rows = {"input_ids": [], "attention_mask": [], "labels": [], "idx": indices}
            for prompt, text in zip(prompts, texts):
                ids = (prompt + text + [eos])[: data.max_length]
                rows["input_ids"].append(ids)
                rows["attention_mask"].append([1] * len(ids))
                rows["labels"].append(([IGNORE_INDEX] * len(prompt) + text + [eos])[: data.max_length])
            return rows

        return encode

    def collator(self, cfg, tokenizer, device: torch.device):
        """Pads input_ids with the pad token and labels with -100 (packed blocks need none)."""
        ensure_pad_token(tokenizer)
        return DataCollatorForTokenClassification(
            tokenizer, pad_to_multiple_of=pad_multiple(cfg.train.mixed_precision, device)
        )

    def load_model(self, cfg, label_names, tokenizer):
        ensure_pad_token(tokenizer)
        model = from_config_or_pretrained(cfg, self.auto_class, tokenizer)
        model.config.pad_token_id = tokenizer.pad_token_id  # pipeline() and generate() pad with it
        if model.generation_config is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        return model

    def build_loss(self, cfg, splits) -> TokenLoss:
        return TokenLoss(shift=True)

    def evaluate(self, model, loader, accelerator, context: EvalContext) -> EvalResult:
        """Perplexity = exp(summed cross entropy over the shifted targets / their count), then samples.

        Every process generates the same samples (same seed and prompts): no process waits on another, and
        sharded models (FSDP) run their forward on all ranks as they must."""
        result = perplexity_result(model, loader, accelerator, TokenLoss(shift=True))
        options = self.options(context.cfg)
        if options.sample_prompts:
            sampling = Sampling(max_new_tokens=options.sample_max_new_tokens, seed=context.cfg.train.seed)
            result.details = {
                "samples": continue_prompts(
                    accelerator.unwrap_model(model), context.tokenizer, options.sample_prompts, sampling
                )
            }
        return result

    def track(self, tracker, result: EvalResult, context: EvalContext, step: int) -> None:
        if result.details:
            tracker.text(
                "eval/samples", samples_table(self.options(context.cfg).sample_prompts, result.details["samples"]), step
            )

    def predict(self, model, tokenizer, texts: list[str], batch_size: int, pairs=None) -> list[dict]:
        """A greedy continuation of each text (ptrain generate samples, with more options)."""
        ensure_pad_token(tokenizer)
        continuations = continue_prompts(model, tokenizer, texts, Sampling(greedy=True))
        return [{"text": text, "continuation": more} for text, more in zip(texts, continuations)]

    def matches_export(self, config) -> bool:
        return any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in config.architectures or [])


def ensure_pad_token(tokenizer) -> None:
    """GPT-2-style tokenizers have no pad token: pad with EOS (padded positions carry no loss and no attention)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
