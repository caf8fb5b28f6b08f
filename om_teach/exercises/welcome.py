"""Judges for the welcome module's exercises."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from om_teach.attacks.linkage import match_matrix
from om_teach.data.register import deidentified_records, public_register
from om_teach.exercises import exercise
from om_teach.privacy.anonymity import smallest_class

_TOLERANCE = {"age": 0, "sex": 0, "bmi": 1.0, "bp": 6.0}


@exercise("welcome.candidates")
def judge_candidates(candidates: Callable) -> str | None:
    """``candidates(record, register, tolerance)``: the names that fit one released record."""
    register = public_register(seed=7).people
    records = deidentified_records().sample(12, random_state=3)
    expected = match_matrix(records, register, _TOLERANCE)
    names = register["name"].to_numpy()
    for row, (_, record) in zip(expected, records.iterrows(), strict=True):
        answer = candidates(record, register, dict(_TOLERANCE))
        if isinstance(answer, (str, pd.DataFrame)):
            return "return a list of names (strings), one for each register entry that fits."
        got = sorted(str(name) for name in answer)
        want = sorted(names[row])
        if len(got) < len(want):
            return (
                "your function missed people who fit. A register value fits when it lies within "
                "the tolerance of the record's value, both ends included."
            )
        if got != want:
            return (
                "your function returned people who do not fit. Check every quasi-identifier "
                "named in the tolerance, and use the absolute difference."
            )
    return None


@exercise("welcome.smallest_class")
def judge_smallest_class(smallest: Callable) -> str | None:
    """``smallest_class(table, quasi_identifiers)``: the table's k."""
    rng = np.random.default_rng(11)
    cases = []
    for rows, levels in ((40, 3), (60, 5), (25, 2)):
        table = pd.DataFrame(rng.integers(0, levels, size=(rows, 3)), columns=["a", "b", "c"])
        cases += [(table, ["a"]), (table, ["a", "b"]), (table, ["a", "b", "c"])]
    for table, columns in cases:
        got = smallest(table.copy(), list(columns))
        if not isinstance(got, (int, np.integer)):
            return "return the size of the smallest class as an int."
        if int(got) != smallest_class(table, columns):
            return (
                "group the rows by all the quasi-identifiers together (not one at a time), "
                "count each group, and return the smallest count."
            )
    return None
