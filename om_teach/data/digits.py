"""scikit-learn's 8×8 handwritten digits, the images of module 02.

The 1,797 images ship inside scikit-learn, so they load offline. Pixels are scaled to [0, 1]
and left unstandardized, so that an image stolen from a gradient can be shown, and scored,
beside the original.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import datasets

SIDE = 8  # images are SIDE × SIDE pixels
CLASSES = 10


@dataclass(frozen=True)
class Digits:
    """Train and test images (rows of 64 pixels in [0, 1]) and their labels."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def load_digits(seed: int = 0, *, test_fraction: float = 0.2) -> Digits:
    """The digits, shuffled by ``seed`` and cut into train and test rows."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    raw = datasets.load_digits()
    X, y = (raw.data / 16.0).astype(np.float32), raw.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(X))
    cut = len(X) - max(1, round(test_fraction * len(X)))
    return Digits(X[order[:cut]], y[order[:cut]], X[order[cut:]], y[order[cut:]])
