"""data.mixture: several training sources, each a file with a sampling weight (and, where it differs from the data
section's, how the file is read); mixed by ptrain/data/mixtures.py."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ptrain.config.strict import Strict

FORMATS = Literal["auto", "csv", "tsv", "json", "jsonl", "parquet", "text", "conll", "corpus", "dialogues", "squad"]


class MixtureSource(Strict):
    file: str = Field(
        description="The source's training rows: a local file or a save_to_disk Dataset folder; with data.streaming "
        "also a glob of shards (relative paths: to data.data_dir)."
    )
    weight: float = Field(
        gt=0,
        description="The source's share of the rows drawn for the mixture, relative to the other sources' weights "
        "(normalised to sum to 1: 7 and 3 mean 70% and 30%).",
    )
    format: FORMATS | None = Field(None, description="How this file is read, when not as data.format says.")
    separator: str | None = Field(None, description="This file's field separator, when not data.separator.")
    column_names: list[str] | None = Field(
        None, description="This file's column names (no header row), when not data.column_names."
    )

    def reading(self) -> dict:
        """The data-section keys this source sets for reading its file."""
        settings = {"format": self.format, "separator": self.separator, "column_names": self.column_names}
        return {key: value for key, value in settings.items() if value is not None}
