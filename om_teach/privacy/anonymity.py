"""k-anonymity by generalization, with Mondrian partitioning (LeFevre, DeWitt and
Ramakrishnan, "Mondrian multidimensional k-anonymity", ICDE 2006).

A table is k-anonymous on a set of quasi-identifiers when every combination of their values
that occurs, occurs at least k times: a linkage attack can then narrow a person down to no
fewer than k records. Mondrian gets there by generalizing: it cuts the records into boxes of
at least k, splitting at the median of the widest quasi-identifier, and releases each record
with its box's range (age 57 becomes 52-61) in place of its values.

k-anonymity says nothing about what the k records share: k patients with the same diagnosis
still reveal it. The toolbox module's differential privacy answers that.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def class_sizes(table: pd.DataFrame, quasi_identifiers: Sequence[str]) -> pd.Series:
    """For each row, the size of its equivalence class: the rows that share all its
    quasi-identifiers."""
    columns = list(quasi_identifiers)
    if not columns:
        raise ValueError("name at least one quasi-identifier")
    missing = [c for c in columns if c not in table]
    if missing:
        raise KeyError(f"the table has no column(s) {missing}")
    return table.groupby(columns, dropna=False)[columns[0]].transform("size")


def smallest_class(table: pd.DataFrame, quasi_identifiers: Sequence[str]) -> int:
    """The table's k: the size of its smallest equivalence class (0 for an empty table)."""
    return int(class_sizes(table, quasi_identifiers).min()) if len(table) else 0


def generalized_columns(quasi_identifiers: Sequence[str]) -> list[str]:
    """The columns that identify a record's class after :func:`mondrian`."""
    return [f"{c}_{end}" for c in quasi_identifiers for end in ("lo", "hi")]


def mondrian(table: pd.DataFrame, quasi_identifiers: Sequence[str], k: int) -> pd.DataFrame:
    """Generalize ``table`` to k-anonymity on numeric ``quasi_identifiers``.

    Each quasi-identifier ``c`` is replaced by ``c_lo`` and ``c_hi``, the smallest and largest
    value of ``c`` in the record's box, in front; the other columns follow as they are, and the
    row order is kept. Every box holds at least k records, so no record is suppressed.
    """
    if not 1 <= k <= len(table):
        raise ValueError(f"k must be between 1 and the table's {len(table)} rows, got {k}")
    columns = list(quasi_identifiers)
    values = table[columns].to_numpy(dtype=float)
    span = np.ptp(values, axis=0)
    span[span == 0] = 1.0
    lo, hi = np.empty_like(values), np.empty_like(values)
    stack = [np.arange(len(table))]
    while stack:
        rows = stack.pop()
        box = values[rows]
        widest_first = np.argsort(-np.ptp(box, axis=0) / span, kind="stable")
        for j in widest_first:
            below = box[:, j] <= np.median(box[:, j])
            if below.sum() >= k and (~below).sum() >= k:
                stack += [rows[below], rows[~below]]
                break
        else:  # no allowed cut: this box is an equivalence class
            lo[rows], hi[rows] = box.min(axis=0), box.max(axis=0)
    ranges = {}
    for j, column in enumerate(columns):
        ranges[f"{column}_lo"], ranges[f"{column}_hi"] = lo[:, j], hi[:, j]
    return pd.concat([pd.DataFrame(ranges, index=table.index), table.drop(columns=columns)], axis=1)


def midpoints(table: pd.DataFrame) -> pd.DataFrame:
    """Each ``c_lo``/``c_hi`` pair back as one column ``c`` at the range's midpoint, so that a
    model trained on raw columns can use a generalized table."""
    out = table.copy()
    for lo in [c for c in table.columns if c.endswith("_lo") and f"{c[:-3]}_hi" in table]:
        column = lo[:-3]
        out[column] = (out.pop(lo) + out.pop(f"{column}_hi")) / 2
    return out
