"""The Sonar exam end to end in the sandbox: the reference, a blank and a partial submission,
and the library's own answers, each scoring exactly as designed; and the key's hidden cases
checked against the library they are built to outwit."""

from __future__ import annotations

import numpy as np
import pytest

from om_teach.grading.key import AnswerKey
from om_teach.grading.sandbox import bubblewrap_version
from om_teach.grading.spec import load_exam

from .conftest import ROOT, assert_scores, check_exam_skeleton, grade_samples

EXAM = ROOT / "exams" / "sonar"
ALL = {
    "q1_payout": 2,
    "q2_ridge_gradient": 2,
    "q3_unpack": 2,
    "q4_rounds_within_budget": 2,
    "q5_cid_v1_raw": 2,
}
NONE = dict.fromkeys(ALL, 0)
EXPECTED = {
    "reference": dict(ALL),
    "blank": dict(NONE),
    "partial": {**ALL, "q2_ridge_gradient": 0, "q4_rounds_within_budget": 0},
    "library_calls": dict(NONE),
}

sandboxed = pytest.mark.skipif(bubblewrap_version() is None, reason="bubblewrap is not usable")


def _key() -> AnswerKey:
    return AnswerKey(load_exam(EXAM), EXAM / "key")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every sample submission once, with a short total limit so the suite stays fast;
    a cell keeps the exam's own limit, time for the library calls to import and answer."""
    grades, _ = grade_samples("sonar", EXPECTED, tmp_path_factory.mktemp("sonar"), total_seconds=45)
    return grades


@sandboxed
@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_submission_scores_exactly_as_expected(graded, name):
    """Reference 10, blank 0, partial 6 (q2 without the penalty, q4 one round over)."""
    assert_scores(graded[name], EXPECTED[name])


@sandboxed
def test_the_exam_measures_the_student_not_the_library(graded):
    """Answering each question with the matching om_teach call scores 0, and fails the exam."""
    assert graded["library_calls"].total == 0
    assert not graded["library_calls"].passed
    assert graded["partial"].passed and not graded["blank"].passed


def test_the_notebook_has_every_question_in_order_and_a_skeleton_for_each():
    check_exam_skeleton("sonar")


def test_the_public_self_check_examples_agree_with_the_key():
    """The self-checks' worked examples are what the key's references answer."""
    checks = _key().module
    assert checks.reference_q1_payout(1000, 500_000, 100_000, 300_000, 200_000, 3) == [83] * 3
    assert (
        checks.reference_q1_payout(10**21, 1_000_000, 0, 1_000_000, 999_999, 7)
        == [142857142857142] * 7
    )
    X, y = [[1.0, 2.0], [3.0, 4.0]], [1.0, 2.0]
    got = checks.reference_q2_ridge_gradient(X, y, [0.5, -0.5], 1.0, 0.1)
    assert np.allclose(got, [-4.9, -7.1, -2.0], rtol=1e-12)
    assert np.allclose(checks.reference_q3_unpack(0x0A1517, 3, 8, 10, 2, 0.5), [1.5, 0.5, -5.0])
    assert checks.reference_q4_rounds_within_budget(2.0, 6.2, np.exp(-9), [2, 4, 10]) == 6
    assert checks.reference_q4_rounds_within_budget(1.0, 2.0, np.exp(-2), [2, 3]) == 0
    assert (
        checks.reference_q5_cid_v1_raw(b"hello world\n".hex())
        == "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    )


def test_hidden_q3_cases_decode_to_the_values_packed():
    """q3's reference recovers the sums that were packed, to within count half-steps, and the
    layout was sized for more summands than were summed."""
    key = _key()
    checks = key.module
    rng = np.random.default_rng(3)
    for count in (1, 3, 8):
        args, packed = checks.packed_sum(rng, slots=9, count=count, max_summands=2 * count)
        step = args[-1]
        assert np.allclose(checks.reference_q3_unpack(*args), packed, rtol=0, atol=count * step)
    for seed in range(20):
        for _, _, slot_bits, offset, count, _ in key.cases("q3_unpack", seed):
            assert (2 * offset * count).bit_length() < slot_bits


def test_hidden_cases_defeat_the_library_shortcuts_on_substance():
    """Outside the sandbox, the library's nearest calls answer some hidden case wrong for every
    seed tried, for the reason each question is built around (not a crash or a timeout)."""
    from om_teach.crypto.paillier import PackingLayout
    from om_teach.privacy.accounting import epsilon
    from om_teach.sonar.model import gradient
    from om_teach.storage.cid import cid_of

    key = _key()
    checks = key.module
    for seed in range(10):
        # q1: the chain pays a single round from the initial error, not from the best one.
        payouts = key.cases("q1_payout", seed)
        assert any(
            checks.reference_q1_payout(bounty, e0, t, e0, new, k)
            != checks.reference_q1_payout(bounty, e0, t, best, new, k)
            for bounty, e0, t, best, new, k in payouts
        )
        # q2: the MSE gradient has no penalty term.
        assert any(
            not np.allclose(
                gradient(X, y, w, b), checks.reference_q2_ridge_gradient(X, y, w, b, lam)
            )
            for X, y, w, b, lam in key.cases("q2_ridge_gradient", seed)
        )
        # q3: a layout rebuilt for count summands has narrower slots than the real one.
        rebuilt_right = []
        for _, slots, slot_bits, offset, count, step in key.cases("q3_unpack", seed):
            layout = PackingLayout(
                key_bits=slots * slot_bits + 1,
                precision=step * count,
                max_abs=offset * step,
                max_summands=count,
            )
            rebuilt_right.append(layout.slot_bits == slot_bits)
        assert not any(rebuilt_right)
        # q4: the library's tighter accountant puts the last affordable round elsewhere.
        library_rounds_differ = []
        for sigma, budget, delta, orders in key.cases("q4_rounds_within_budget", seed):
            rounds = checks.reference_q4_rounds_within_budget(sigma, budget, delta, orders)
            spent = [
                epsilon(noise_multiplier=sigma, sample_rate=1.0, steps=r, delta=delta)
                for r in (rounds, rounds + 1)
            ]
            library_rounds_differ.append(spent[0] > budget or spent[1] <= budget)
        assert any(library_rounds_differ)
        # q5: cid_of names the dag-pb CIDv0, never the raw CIDv1.
        assert all(
            cid_of(bytes.fromhex(h)) != checks.reference_q5_cid_v1_raw(h)
            for (h,) in key.cases("q5_cid_v1_raw", seed)
        )
