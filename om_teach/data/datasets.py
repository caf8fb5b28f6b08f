"""Standardized, seeded train/validation/test splits of the data sets shipped in scikit-learn.

Both load offline: scikit-learn carries the diabetes (442 x 10, regression) and breast-cancer
(569 x 30, binary classification) tables inside the package.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import datasets


@dataclass(frozen=True)
class Split:
    """A data set cut into train, validation and test rows.

    Features are standardized with the training rows' mean and standard deviation only, so
    that nothing about the validation or test rows leaks into training.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]


def _split(
    X: np.ndarray,
    y: np.ndarray,
    names: tuple[str, ...],
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    standardize_target: bool,
) -> Split:
    if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be fractions "
            "in [0, 1) that leave some rows for training"
        )
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = max(1, round(test_fraction * len(X)))
    n_val = round(val_fraction * len(X))
    test, val, train = np.split(order, [n_test, n_test + n_val])
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    X = (X - mean) / np.where(std > 0, std, 1.0)
    if standardize_target:
        y = (y - y[train].mean()) / y[train].std()
    return Split(X[train], y[train], X[val], y[val], X[test], y[test], names)


def load_diabetes(
    seed: int = 0,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    standardize_target: bool = True,
) -> Split:
    """The diabetes regression data (disease progression after one year), standardized.

    The target is standardized too by default, so that a gradient step of size 0.1 is sensible
    and mean squared errors read as fractions of the target's variance.
    """
    raw = datasets.load_diabetes(scaled=False)
    return _split(
        raw.data.astype(np.float64),
        raw.target.astype(np.float64),
        tuple(raw.feature_names),
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        standardize_target=standardize_target,
    )


def load_breast_cancer(
    seed: int = 0, *, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> Split:
    """The breast-cancer classification data (1 = benign, 0 = malignant), standardized."""
    raw = datasets.load_breast_cancer()
    return _split(
        raw.data.astype(np.float64),
        raw.target.astype(np.int64),
        tuple(raw.feature_names),
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        standardize_target=False,
    )
