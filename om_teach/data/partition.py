"""Split rows (horizontally) or features (vertically) across data owners.

Each partitioner returns one index array per owner. Together they cover every row (or
feature) exactly once, so no record is lost or duplicated, and the same seed gives the same
split. Skew follows Hsu et al. 2019 ("Measuring the effects of non-identical data
distribution for federated visual classification"): each class's rows are dealt to owners in
proportions drawn from a Dirichlet distribution; a small concentration gives each owner few
classes, a large one approaches iid.
"""

from __future__ import annotations

import numpy as np


def _check_owners(owners: int, n: int, what: str) -> None:
    if owners < 1:
        raise ValueError(f"owners must be at least 1, got {owners}")
    if owners > n:
        raise ValueError(f"cannot split {n} {what} across {owners} owners: more owners than {what}")


def iid(n_rows: int, owners: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffle the rows and deal them out in near-equal shares (sizes differ by at most one)."""
    _check_owners(owners, n_rows, "rows")
    order = np.random.default_rng(seed).permutation(n_rows)
    return [np.sort(part) for part in np.array_split(order, owners)]


def dirichlet(
    labels: np.ndarray, owners: int, concentration: float, seed: int = 0, *, bins: int = 5
) -> list[np.ndarray]:
    """Skew by label: owners get each class in Dirichlet(concentration) proportions.

    A continuous target (a float array with many values) is cut into ``bins`` quantile bins
    first, so the diabetes target skews the same way as the breast-cancer labels. Every owner
    gets at least one row.
    """
    labels = np.asarray(labels)
    _check_owners(owners, len(labels), "rows")
    if not concentration > 0:
        raise ValueError(f"concentration must be positive, got {concentration}")
    if labels.dtype.kind == "f" and len(np.unique(labels)) > bins:
        edges = np.quantile(labels, np.linspace(0, 1, bins + 1)[1:-1])
        labels = np.searchsorted(edges, labels, side="right")
    rng = np.random.default_rng(seed)
    shares: list[list[np.ndarray]] = [[] for _ in range(owners)]
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        proportions = rng.dirichlet(np.full(owners, concentration))
        cuts = np.round(np.cumsum(proportions)[:-1] * len(rows)).astype(int)
        for owner, part in enumerate(np.split(rows, cuts)):
            shares[owner].append(part)
    parts = [np.concatenate(s) for s in shares]
    for owner in range(owners):  # hand each empty owner one row from the largest owner
        if len(parts[owner]) == 0:
            donor = max(range(owners), key=lambda o: len(parts[o]))
            parts[owner], parts[donor] = parts[donor][-1:], parts[donor][:-1]
    return [np.sort(part) for part in parts]


def by_feature(n_features: int, owners: int, seed: int = 0) -> list[np.ndarray]:
    """Split the columns across owners (vertical partitioning): each owner holds some features
    of every row, as when a hospital and an insurer know different things about the same people."""
    _check_owners(owners, n_features, "features")
    return iid(n_features, owners, seed)
