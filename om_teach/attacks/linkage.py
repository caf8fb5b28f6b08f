"""Linkage attacks: put names back on 'de-identified' records by joining them with a public
register on quasi-identifiers (Sweeney, "k-anonymity: a model for protecting privacy", 2002).

A released record may give a quasi-identifier exactly (``age = 57``) or as a range
(``age_lo = 50, age_hi = 59``) after generalization. Either way a register entry is a
candidate when each of its values lies inside the record's range widened by the tolerance that
covers the register's own measurement noise. A record with exactly one candidate is linked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def _bounds(records: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """The range each record gives for ``column``: [lo, hi] if generalized, else [v, v]."""
    if column in records:
        values = records[column].to_numpy(dtype=float)
        return values, values
    if f"{column}_lo" in records and f"{column}_hi" in records:
        return records[f"{column}_lo"].to_numpy(float), records[f"{column}_hi"].to_numpy(float)
    raise KeyError(f"released records give neither {column!r} nor {column}_lo/{column}_hi")


def candidate_counts(
    records: pd.DataFrame,
    register: pd.DataFrame,
    tolerance: Mapping[str, float],
) -> np.ndarray:
    """How many register entries are consistent with each released record.

    ``tolerance`` names the quasi-identifiers to join on and, for each, how far a register
    value may lie outside the record's range (0 for exact attributes such as sex).
    """
    return match_matrix(records, register, tolerance).sum(axis=1)


def link(
    records: pd.DataFrame,
    register: pd.DataFrame,
    tolerance: Mapping[str, float],
    *,
    name_column: str = "name",
) -> pd.Series:
    """The name each record is linked to when exactly one register entry fits it, else None."""
    matches = match_matrix(records, register, tolerance)
    unique = matches.sum(axis=1) == 1
    names = register[name_column].to_numpy()[matches.argmax(axis=1)]
    return pd.Series(
        np.where(unique, names, None), index=records.index, name="linked_name", dtype=object
    )


def match_matrix(
    records: pd.DataFrame, register: pd.DataFrame, tolerance: Mapping[str, float]
) -> np.ndarray:
    """A boolean (records x register) matrix: does register entry j fit record i?"""
    if not tolerance:
        raise ValueError("tolerance must name at least one quasi-identifier to join on")
    fits = np.ones((len(records), len(register)), dtype=bool)
    for column, tol in tolerance.items():
        if tol < 0:
            raise ValueError(f"tolerance for {column!r} must be non-negative, got {tol}")
        lo, hi = _bounds(records, column)
        values = register[column].to_numpy(dtype=float)
        fits &= (values >= lo[:, None] - tol - 1e-9) & (values <= hi[:, None] + tol + 1e-9)
    return fits


def reidentified(linked: pd.Series, truth: Sequence[str | None]) -> np.ndarray:
    """Which links are right: the linked name is the record's true name."""
    pairs = zip(linked, truth, strict=True)
    return np.array([name is not None and name == true for name, true in pairs])


def guess_success(
    records: pd.DataFrame,
    register: pd.DataFrame,
    tolerance: Mapping[str, float],
    truth: Sequence[str | None],
    *,
    name_column: str = "name",
) -> np.ndarray:
    """For each record, the chance that an attacker who picks one candidate at random names
    the right person: 1/(number of candidates) when the true person is among them, else 0.

    Unique links fall to zero once every record shares its class with others; this measure
    still sees the attacker's odds, which is what k-anonymity bounds by 1/k.
    """
    matches = match_matrix(records, register, tolerance)
    names = register[name_column].to_numpy()
    hit = np.array(
        [true is not None and true in names[row] for row, true in zip(matches, truth, strict=True)]
    )
    return np.where(hit, 1.0 / np.maximum(matches.sum(axis=1), 1), 0.0)
