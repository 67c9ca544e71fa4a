"""scikit-learn's bundled 8x8 digits with a fixed train/val/test split (60/20/20, stratified)."""

from __future__ import annotations

import functools

import numpy as np

SPLITS = ("train", "val", "test")
SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def digits_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images (N, 1, 8, 8) float32 in [0, 1], labels int64)}``, the same every time."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, random_state=SPLIT_SEED, stratify=y
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, random_state=SPLIT_SEED, stratify=y_rest
    )
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}
