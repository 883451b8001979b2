"""Seeded train/validation/test splits whose indices are saved so that a run can be reproduced."""

from __future__ import annotations

import json
import os

import numpy as np

from remul_ff.errors import DataError
from remul_ff.utils.io import atomic_path

SPLIT_NAMES = ("train", "valid", "test")


def _as_count(size: float | int, n: int, name: str) -> int:
    """A fraction in ``(0, 1)`` becomes ``round(size * n)``; an integer is taken as a count."""
    if isinstance(size, float) and 0.0 <= size < 1.0:
        return int(round(size * n))
    if float(size) != int(size) or size < 0:
        raise DataError(f"{name} size {size!r} must be a fraction in [0, 1) or a non-negative whole count.")
    return int(size)


def split_indices(
    n: int, valid: float | int = 0.05, test: float | int = 0.0, train: float | int | None = None, seed: int = 0
) -> dict[str, list[int]]:
    """Randomly partition ``range(n)`` into train, validation and test indices.

    Args:
        n: Number of frames.
        valid: Validation size, as a fraction of ``n`` or a count.
        test: Test size, as a fraction or a count.
        train: Training size; ``None`` takes every frame not in validation or test.
        seed: Seed of the permutation.

    Returns:
        ``{"train": [...], "valid": [...], "test": [...]}`` with disjoint, sorted indices.
    """
    n_valid, n_test = _as_count(valid, n, "validation"), _as_count(test, n, "test")
    n_train = n - n_valid - n_test if train is None else _as_count(train, n, "training")
    if n_train + n_valid + n_test > n or n_train <= 0:
        raise DataError(f"cannot take {n_train} train + {n_valid} validation + {n_test} test frames from {n}; lower the split sizes.")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([n_train, n_valid, n_test])
    parts = np.split(order[: bounds[-1]], bounds[:-1])
    return {name: sorted(int(i) for i in part) for name, part in zip(SPLIT_NAMES, parts)}


def save_splits(splits: dict[str, list[int]], path: str | os.PathLike) -> None:
    """Write split indices as JSON (atomically)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(splits))


def load_splits(path: str | os.PathLike) -> dict[str, list[int]]:
    """Read split indices written by :func:`save_splits`."""
    try:
        splits = json.loads(open(path).read())
    except (OSError, ValueError) as exc:
        raise DataError(f"could not read the split file {path} ({exc}); delete it to draw a new split.") from exc
    return {name: [int(i) for i in splits.get(name, [])] for name in SPLIT_NAMES}
