"""A task written outside ptrain, as a user adds one: keyword spotting, a binary label computed from the text
(does it contain the section's keyword?), so it needs no label column. It declares its own config section and
check, and reuses sequence classification's model, loss and evaluation."""

from __future__ import annotations

from pydantic import Field

from ptrain.config import Strict
from ptrain.errors import ConfigError
from ptrain.tasks.classification import SequenceClassification, text_encoder


class KeywordOptions(Strict):
    keyword: str = Field("feel", description='A text containing it is labelled "yes", any other "no".')


class KeywordSpotting(SequenceClassification):
    name = "keyword_spotting"
    Options = KeywordOptions

    def check(self, cfg, path) -> None:
        if not self.options(cfg).keyword.strip():
            raise ConfigError(f"{path}: keyword_spotting.keyword is empty; name the word to spot")

    def columns(self, cfg) -> list[tuple[str, str]]:
        return [("data.text_column", cfg.data.text_column)]

    def label_names(self, cfg, train) -> list[str]:
        return ["no", "yes"]

    def encoder(self, cfg, tokenizer, label_names, ds, split):
        keyword, text = self.options(cfg).keyword, cfg.data.text_column
        encode = text_encoder(cfg, tokenizer, lambda values: values)

        def with_labels(batch: dict, indices: list[int]) -> dict:
            return encode({**batch, cfg.data.label_column: [int(keyword in t.split()) for t in batch[text]]}, indices)

        return with_labels
