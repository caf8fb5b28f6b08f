"""Reference answers to the notebooks' self-checks, and wrong answers that must fail.

They live here, not in the package, so that no student can import a solution.
"""

from __future__ import annotations


def candidates(record, register, tolerance):
    fits = True
    for column, tol in tolerance.items():
        fits = fits & ((register[column] - record[column]).abs() <= tol)
    return list(register["name"][fits])


def candidates_strict(record, register, tolerance):
    """Wrong: excludes values exactly at the tolerance."""
    fits = True
    for column, tol in tolerance.items():
        fits = fits & ((register[column] - record[column]).abs() < tol)
    return list(register["name"][fits])


def candidates_age_only(record, register, tolerance):
    """Wrong: joins on age alone."""
    return list(register["name"][register["age"] == record["age"]])


def smallest_class(table, quasi_identifiers):
    return int(table.groupby(list(quasi_identifiers)).size().min())


def smallest_class_first_column(table, quasi_identifiers):
    """Wrong: groups by the first column only."""
    return int(table.groupby(quasi_identifiers[0]).size().min())


class AlwaysEqual(int):
    """Wrong, and adversarial: claims to equal everything."""

    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


def smallest_class_liar(table, quasi_identifiers):
    return AlwaysEqual(999)


REFERENCE = {
    "welcome.candidates": candidates,
    "welcome.smallest_class": smallest_class,
}

WRONG = {
    "welcome.candidates": [candidates_strict, candidates_age_only, lambda *a: "Ann"],
    "welcome.smallest_class": [smallest_class_first_column, smallest_class_liar, lambda *a: "2"],
}
