"""Splits from a column, seeded (stratified) samples and k-fold cross-validation of the training rows.

- data.split_column: one file whose column says each row's split; data.split_values maps train/validation/test
  to the values found there. A value it does not map is refused, naming the value and its row count.
- data.sample_train_rows / data.sample_eval_rows: a seeded sample (data.sample_seed), stratified by label when
  the task classifies, so each class keeps its share (largest remainders). data.max_*_rows keep "first N".
- data.num_folds / data.fold: stratified folds of the training rows (seeded by data.sample_seed); fold `fold` is
  the validation split, the others train.
- data.group_column: both hold out whole groups of rows (rows sharing the column's value), so no group is on both
  sides of the split.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from datasets import Dataset

from ptrain.config import DataConfig
from ptrain.data.labels import source_name
from ptrain.errors import DataError


def split_by_column(data: DataConfig, ds: Dataset) -> dict[str, Dataset]:
    """The rows of each split named by data.split_column (the column is dropped)."""
    column = data.split_column
    if column not in ds.column_names:
        raise DataError(f"data.split_column '{column}' not in {source_name(ds, 'train')} columns {ds.column_names}")
    values = [str(value).strip() for value in ds[column]]
    split_of = {str(value): split for split, names in data.split_values.items() for value in names}
    unknown = Counter(value for value in values if value not in split_of)
    if unknown:
        value, count = unknown.most_common(1)[0]
        raise DataError(
            f"{source_name(ds, 'train')}: data.split_column '{column}' has the value '{value}' in {count} rows, which "
            f"data.split_values does not map; add it (e.g. data.split_values.test=[test, {value}]) or fix the rows"
        )
    rows: dict[str, list[int]] = {}
    for index, value in enumerate(values):
        rows.setdefault(split_of[value], []).append(index)
    ds = ds.remove_columns(column)
    return {split: ds.select(indices) for split, indices in rows.items()}


def seeded_sample(ds: Dataset, size: int, seed: int, label_column: str | None) -> Dataset:
    """`size` rows drawn without replacement, in file order; stratified by label_column when given."""
    if size >= len(ds):
        return ds
    rng = np.random.default_rng(seed)
    if label_column is None:
        return ds.select(sorted(rng.choice(len(ds), size, replace=False).tolist()))
    groups = _label_groups(ds, label_column)
    quotas = _largest_remainders({label: len(rows) for label, rows in groups.items()}, size)
    chosen = [row for label, rows in groups.items() for row in rng.permutation(rows)[: quotas[label]].tolist()]
    return ds.select(sorted(chosen))


def fold_split(
    ds: Dataset, num_folds: int, fold: int, seed: int, label_column: str | None, group_column: str | None = None
) -> tuple[Dataset, Dataset]:
    """(training folds, held-out fold `fold`): each label's rows are shuffled and dealt round-robin to the
    folds, so every fold keeps the label shares and the folds are disjoint and cover every row; with group_column,
    whole groups are dealt instead (group_folds)."""
    if group_column is not None:
        assignment = group_folds(ds, group_column, num_folds, seed)
        return ds.select(np.flatnonzero(assignment != fold).tolist()), ds.select(np.flatnonzero(assignment == fold))
    rng = np.random.default_rng(seed)
    groups = _label_groups(ds, label_column) if label_column else {None: list(range(len(ds)))}
    assignment = np.empty(len(ds), dtype=np.int64)
    start = 0
    for rows in groups.values():
        shuffled = rng.permutation(rows)
        assignment[shuffled] = (np.arange(len(shuffled)) + start) % num_folds
        start += len(shuffled)  # the next label's deal begins where this one ended: fold sizes stay even
    held_out = np.flatnonzero(assignment == fold).tolist()
    return ds.select(np.flatnonzero(assignment != fold).tolist()), ds.select(held_out)


def group_split(ds: Dataset, column: str, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(training rows, held-out rows): groups of `column` in a seeded order, held out until they hold `fraction` of
    the rows (at least one group, and never all of them)."""
    groups = _column_groups(ds, column)
    if len(groups) < 2:
        raise DataError(f"data.group_column '{column}' has one value in {source_name(ds, 'train')}; nothing to split")
    order = np.random.default_rng(seed).permutation(len(groups))
    keys, held_out, wanted = list(groups), [], fraction * len(ds)
    for position in order[:-1]:
        held_out.extend(groups[keys[position]])
        if len(held_out) >= wanted:
            break
    held = set(held_out)
    return ds.select([row for row in range(len(ds)) if row not in held]), ds.select(sorted(held_out))


def group_folds(ds: Dataset, column: str, num_folds: int, seed: int) -> np.ndarray:
    """The fold of every row: groups in a seeded order, each to the fold with the fewest rows so far."""
    groups = _column_groups(ds, column)
    if len(groups) < num_folds:
        raise DataError(
            f"data.group_column '{column}' has {len(groups)} values in {source_name(ds, 'train')}, fewer than "
            f"data.num_folds={num_folds}"
        )
    keys, sizes = list(groups), np.zeros(num_folds, dtype=np.int64)
    assignment = np.empty(len(ds), dtype=np.int64)
    for position in np.random.default_rng(seed).permutation(len(keys)):
        fold = int(sizes.argmin())
        assignment[groups[keys[position]]] = fold
        sizes[fold] += len(groups[keys[position]])
    return assignment


def _column_groups(ds: Dataset, column: str) -> dict:
    if column not in ds.column_names:
        raise DataError(f"data.group_column '{column}' not in {source_name(ds, 'train')} columns {ds.column_names}")
    groups: dict = {}
    for index, value in enumerate(ds[column]):
        groups.setdefault(value, []).append(index)
    return groups


def _label_groups(ds: Dataset, label_column: str) -> dict:
    groups: dict = {}
    for index, label in enumerate(ds[label_column]):
        groups.setdefault(label, []).append(index)
    return dict(sorted(groups.items(), key=lambda item: str(item[0])))  # a stable order, whatever the file order


def _largest_remainders(counts: dict, size: int) -> dict:
    """Integer quotas proportional to counts that sum to size (Hamilton's method)."""
    total = sum(counts.values())
    exact = {label: count * size / total for label, count in counts.items()}
    quotas = {label: int(value) for label, value in exact.items()}
    by_remainder = sorted(exact, key=lambda label: exact[label] - quotas[label], reverse=True)
    for label in by_remainder[: size - sum(quotas.values())]:
        quotas[label] += 1
    return quotas
