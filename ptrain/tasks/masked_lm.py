"""Masked language modelling (domain adaptation of an encoder): dynamic masking in the collator while training,
the same masks at every evaluation, perplexity over the masked tokens; the export loads in fill-mask."""

from __future__ import annotations

import torch
from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling, DataCollatorForTokenClassification

from ptrain.data.collate import pad_multiple
from ptrain.errors import ModelError
from ptrain.model.loading import from_config_or_pretrained
from ptrain.tasks.base import EvalContext, EvalResult
from ptrain.tasks.declarations import MaskedLMDeclaration
from ptrain.tasks.language_modeling import TokenLoss, perplexity_result
from ptrain.tasks.packing import pack_blocks

EVAL_MASK_SEED = 1234  # evaluation masks depend on this and the row's tokens only: successive evaluations compare


class MaskedLM(MaskedLMDeclaration):
    pipeline = "fill-mask"
    auto_class = AutoModelForMaskedLM

    def columns(self, cfg) -> list[tuple[str, str]]:
        return [("data.text_column", cfg.data.text_column)]

    def encoder(self, cfg, tokenizer, label_names, ds, split):
        """Packed: the texts' tokens (each with its [CLS] ... [SEP]) concatenated and cut into blocks of
        masked_lm.block_size, as run_mlm.py does; otherwise one text per row, truncated at data.max_length."""
        if tokenizer.mask_token is None:
            raise ModelError(
                f"the tokenizer of {cfg.model.tokenizer or cfg.model.name_or_path} has no mask token; "
                "masked_lm needs one"
            )
        text, max_length, options = cfg.data.text_column, cfg.data.max_length, self.options(cfg)

        def encode(batch: dict, indices: list[int]) -> dict:
            if options.packing:
                return pack_blocks(tokenizer(batch[text])["input_ids"], options.block_size, indices)
            encoded = tokenizer(batch[text], truncation=True, max_length=max_length)
            encoded["idx"] = indices
            return encoded

        return encode

    def collator(self, cfg, tokenizer, device: torch.device):
        probability = self.options(cfg).mlm_probability
        return MaskingCollator(tokenizer, probability, pad_multiple(cfg.train.mixed_precision, device))

    def load_model(self, cfg, label_names, tokenizer):
        return from_config_or_pretrained(cfg, self.auto_class, tokenizer)

    def build_loss(self, cfg, splits) -> TokenLoss:
        return TokenLoss(shift=False)

    def evaluate(self, model, loader, accelerator, context: EvalContext) -> EvalResult:
        """Perplexity = exp(summed cross entropy over the masked tokens / masked tokens)."""
        collator = getattr(loader.collate_fn, "collator", loader.collate_fn)  # inside batching.CollatedOnce
        collator.fixed = True  # masks seeded by row: the same tokens are masked at every evaluation
        try:
            return perplexity_result(model, loader, accelerator, TokenLoss(shift=False))
        finally:
            collator.fixed = False

    def predict(self, model, tokenizer, texts: list[str], batch_size: int, pairs=None) -> list[dict]:
        """The five likeliest fillers of the first mask token of each text."""
        from transformers import pipeline

        fill = pipeline("fill-mask", model=model, tokenizer=tokenizer)
        rows = []
        for text in texts:
            if tokenizer.mask_token not in text:
                rows.append({"text": text, "error": f"no {tokenizer.mask_token} in the text"})
                continue
            found = fill(text, top_k=5)
            found = found[0] if found and isinstance(found[0], list) else found  # several masks: the first one
            rows.append({"text": text, "fillers": [{"token": f["token_str"], "score": f["score"]} for f in found]})
        return rows


class MaskingCollator:
    """Pads and masks with transformers' DataCollatorForLanguageModeling (mlm_probability of the tokens are
    chosen; of those 80% become [MASK], 10% a random token, 10% stay; special tokens never).

    Training draws from the global RNG (a resumed run restores it). With `fixed` (evaluation) each row is
    masked with a generator seeded by its own tokens, so the masks do not depend on batch size, process count
    or how many evaluations came before (a seed from the tokens, not the row index: packed blocks share those).
    """

    def __init__(self, tokenizer, mlm_probability: float, pad_to_multiple_of: int | None):
        self.masking = DataCollatorForLanguageModeling(
            tokenizer, mlm_probability=mlm_probability, pad_to_multiple_of=pad_to_multiple_of
        )
        self.padding = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        self.fixed = False

    @property
    def same_every_call(self) -> bool:
        """Only the fixed (evaluation) masks may be collated once and reused (ptrain/data/batching.py)."""
        return self.fixed

    def __call__(self, examples: list[dict]) -> dict:
        if not self.fixed:
            return self.masking(examples)
        masked = []
        for example in examples:
            seed = hash((EVAL_MASK_SEED, *example["input_ids"])) % 2**63  # int hashes are not salted per process
            self.masking.generator = torch.Generator().manual_seed(seed)
            ids, labels = self.masking.torch_mask_tokens(torch.tensor([example["input_ids"]]))
            masked.append({**example, "input_ids": ids[0].tolist(), "labels": labels[0].tolist()})
        self.masking.generator = None
        return self.padding(masked)
