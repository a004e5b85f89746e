"""Label names and ids: from the config, the dataset's ClassLabel, or the values in the training data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from datasets import ClassLabel, Dataset

from ptrain.errors import DataError

if TYPE_CHECKING:
    from ptrain.config import Config


def resolve_label_names(cfg: Config, train: Dataset) -> list[str]:
    """Label ids follow data.label_names, else the dataset's ClassLabel, else sorted training values."""
    if cfg.data.label_names is not None:
        return list(cfg.data.label_names)
    feature = train.features[cfg.data.label_column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values = train.unique(cfg.data.label_column)
    if all(isinstance(v, int) for v in values):
        if min(values) < 0:
            raise DataError(f"{source_name(train, 'train')}: integer labels must be 0..K-1, found {min(values)}")
        return [str(i) for i in range(max(values) + 1)]
    return sorted(str(v) for v in values)


def label_to_id(ds: Dataset, split: str, column: str, names: list[str]) -> dict:
    """Map every label value in `ds` to its id, or fail naming the first unknown value and its row."""
    values = ds.unique(column)
    by_position = isinstance(ds.features[column], ClassLabel) or all(isinstance(v, int) for v in values)
    mapping = {i: i for i in range(len(names))} if by_position else {name: i for i, name in enumerate(names)}
    unknown = [v for v in values if v not in mapping]
    if unknown:
        row = ds[column].index(unknown[0])
        raise DataError(
            f"{source_name(ds, split)}: label {unknown[0]!r} at row {row} is not one of the labels {names}; "
            "fix the row or add the label to data.label_names"
        )
    return mapping


def source_name(ds: Dataset, split: str) -> str:
    """The file a split came from (set when read), for error messages."""
    return ds.info.description or f"the {split} split"
