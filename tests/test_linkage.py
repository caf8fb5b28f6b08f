"""The register, the linkage attack, and k-anonymity by Mondrian, against known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from om_teach.attacks.linkage import candidate_counts, guess_success, link, reidentified
from om_teach.data.register import QUASI_IDENTIFIERS, deidentified_records, public_register
from om_teach.privacy.anonymity import (
    class_sizes,
    generalized_columns,
    midpoints,
    mondrian,
    smallest_class,
)

REGISTER = pd.DataFrame(
    {
        "name": ["Ann", "Bob", "Cy", "Di"],
        "age": [30, 30, 41, 41],
        "sex": [1, 1, 2, 2],
        "bmi": [22.0, 22.5, 30.0, 35.0],
    }
)
TOLERANCE = {"age": 0, "sex": 0, "bmi": 1.0}


def test_link_known_answers():
    """A record fitting one entry is linked; two fits or none leave it unlinked."""
    records = pd.DataFrame({"age": [30, 41, 41, 50], "sex": [1, 2, 2, 1], "bmi": [22, 30.4, 33, 1]})
    assert list(candidate_counts(records, REGISTER, TOLERANCE)) == [2, 1, 0, 0]
    assert list(link(records, REGISTER, TOLERANCE)) == [None, "Cy", None, None]
    assert list(reidentified(link(records, REGISTER, TOLERANCE), [None, "Cy", "Di", None])) == [
        False,
        True,
        False,
        False,
    ]


def test_link_understands_generalized_ranges():
    """A released range [lo, hi] fits every register value inside it (plus tolerance)."""
    records = pd.DataFrame(
        {"age_lo": [30], "age_hi": [45], "sex": [2], "bmi_lo": [29], "bmi_hi": [36]}
    )
    assert list(candidate_counts(records, REGISTER, TOLERANCE)) == [2]
    assert list(guess_success(records, REGISTER, TOLERANCE, ["Cy"])) == [0.5]


def test_link_errors_are_clear():
    with pytest.raises(KeyError, match="neither 'bmi' nor bmi_lo/bmi_hi"):
        link(pd.DataFrame({"age": [1]}), REGISTER, {"bmi": 1})
    with pytest.raises(ValueError, match="non-negative"):
        link(REGISTER, REGISTER, {"bmi": -1})
    with pytest.raises(ValueError, match="at least one"):
        link(REGISTER, REGISTER, {})


def test_register_holds_every_patient_under_a_unique_name():
    """The register names all 442 patients among others, with noise on BMI and blood pressure."""
    register = public_register(seed=1)
    records = deidentified_records()
    people = register.people.set_index("name")
    assert len(people) == 1500 and people.index.is_unique
    assert sorted(register.patient_of.values()) == list(range(len(records)))
    rows = people.loc[list(register.patient_of)]
    study = records.loc[list(register.patient_of.values())]
    assert np.array_equal(rows["age"].to_numpy(), study["age"].to_numpy())
    bmi_error = rows["bmi"].to_numpy() - study["bmi"].to_numpy()
    assert 0.15 < bmi_error.std() < 0.5  # noisy, as measured on another day


def test_register_is_seeded():
    a, b, c = public_register(seed=3), public_register(seed=3), public_register(seed=4)
    assert a.people.equals(b.people) and not a.people.equals(c.people)


def test_attack_reidentifies_many_raw_records():
    """Against the raw release the attack names a large share of patients, all correctly."""
    register = public_register(seed=2020)
    records = deidentified_records()
    name_of = {row: name for name, row in register.patient_of.items()}
    truth = [name_of[i] for i in records.index]
    linked = link(records, register.people, {"age": 0, "sex": 0, "bmi": 1.0, "bp": 6.0})
    right = reidentified(linked, truth)
    assert right.sum() > 100
    assert right.sum() >= 0.9 * linked.notna().sum()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 120),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_mondrian_is_k_anonymous_and_truthful(n, k, seed):
    """Every class holds at least k rows, rows are kept in order, and each true value lies in
    its released range."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {"a": rng.integers(0, 50, n), "b": rng.normal(size=n).round(1), "c": rng.integers(0, 2, n)}
    )
    table["secret"] = rng.normal(size=n)
    if k > n:
        with pytest.raises(ValueError, match="k must be between 1"):
            mondrian(table, ["a", "b", "c"], k)
        return
    released = mondrian(table, ["a", "b", "c"], k)
    assert smallest_class(released, generalized_columns(["a", "b", "c"])) >= k
    assert released.index.equals(table.index)
    assert released["secret"].equals(table["secret"])
    for column in "abc":
        assert (released[f"{column}_lo"] <= table[column]).all()
        assert (table[column] <= released[f"{column}_hi"]).all()


def test_mondrian_with_k_1_keeps_distinct_values():
    table = pd.DataFrame({"a": [1, 2, 3, 4]})
    released = mondrian(table, ["a"], 1)
    assert list(released["a_lo"]) == [1, 2, 3, 4] == list(released["a_hi"])
    assert list(midpoints(released)["a"]) == [1, 2, 3, 4]


def test_class_sizes_known_answer():
    table = pd.DataFrame({"a": [1, 1, 2, 2, 2], "b": [0, 0, 0, 1, 1]})
    assert list(class_sizes(table, ["a", "b"])) == [2, 2, 1, 2, 2]
    assert smallest_class(table, ["a", "b"]) == 1 and smallest_class(table, ["a"]) == 2
    with pytest.raises(KeyError, match="no column"):
        class_sizes(table, ["z"])


def test_k_anonymity_cuts_the_attackers_odds():
    """On the course's data, k = 5 leaves no unique link, and the mean odds at most 1/5."""
    register = public_register(seed=2020)
    records = deidentified_records()
    name_of = {row: name for name, row in register.patient_of.items()}
    truth = [name_of[i] for i in records.index]
    tolerance = {"age": 0, "sex": 0, "bmi": 1.0, "bp": 6.0}
    released = mondrian(records, QUASI_IDENTIFIERS, 5)
    assert link(released, register.people, tolerance).notna().sum() == 0
    assert guess_success(released, register.people, tolerance, truth).mean() <= 1 / 5
