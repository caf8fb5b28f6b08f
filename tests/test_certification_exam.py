"""The certification exam's module-02 questions end to end in the sandbox: the reference, a
blank and a partial submission, and the library's own answers, each scoring exactly as
designed; and the key's hidden cases checked against the library they are built to outwit."""

from __future__ import annotations

import numpy as np
import pytest

from om_teach import syllabus
from om_teach.grading.key import AnswerKey
from om_teach.grading.sandbox import bubblewrap_version
from om_teach.grading.spec import load_exam

from .conftest import ROOT, assert_scores, check_exam_skeleton, grade_samples

EXAM = ROOT / "exams" / "certification"
ALL = {"m02_q1_server_step": 2, "m02_q2_fedadagrad_step": 2, "m02_q3_steal_pixels": 2}
NONE = dict.fromkeys(ALL, 0)
EXPECTED = {
    "reference": dict(ALL),
    "blank": dict(NONE),
    "partial": {**ALL, "m02_q2_fedadagrad_step": 0},
    "library_calls": dict(NONE),
}

sandboxed = pytest.mark.skipif(bubblewrap_version() is None, reason="bubblewrap is not usable")


def _key() -> AnswerKey:
    return AnswerKey(load_exam(EXAM), EXAM / "key")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every sample once, with a short total limit so the suite stays fast."""
    grades, _ = grade_samples("certification", EXPECTED, tmp_path_factory.mktemp("cert"),
                              total_seconds=45)  # fmt: skip
    return grades


@sandboxed
@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_submission_scores_exactly_as_expected(graded, name):
    """Reference 6, blank 0, partial 4 (Adam's second moment for Adagrad's)."""
    assert_scores(graded[name], EXPECTED[name])


@sandboxed
def test_the_exam_measures_the_student_not_the_library(graded):
    """Answering each question with the nearest om_teach call scores 0, and fails the exam."""
    assert graded["library_calls"].total == 0 and not graded["library_calls"].passed
    assert graded["partial"].passed and not graded["blank"].passed


def test_the_notebook_has_every_question_in_order_and_a_skeleton_for_each():
    check_exam_skeleton("certification")


def test_the_final_exam_stays_planned_and_covers_module_02():
    course = syllabus.load()
    [final] = [e for e in course.exams if e.final]
    assert final.id == "certification" and final.status == "planned"
    assert "02_federated_learning" in load_exam(EXAM).modules


def test_the_public_self_check_examples_agree_with_the_key():
    checks = _key().module
    x, clients = [[0.0, 0.0], [1.0]], [[[2.0, 4.0], [3.0]], [[0.0, 0.0], [1.0]]]
    assert checks.reference_m02_q1_server_step(x, clients, [1, 3], 2.0) == [[1.0, 2.0], [2.0]]
    got = checks.reference_m02_q2_fedadagrad_step([1.0, 1.0], [0.6, -0.8], [0.2, 0.0], [0.0, 0.0],
                                                  1.0, 0.5, 0.4)  # fmt: skip
    assert np.allclose(got[0], [1.4, 2 / 3]) and np.allclose(got[2], [0.36, 0.64])
    pixels = checks.reference_m02_q3_steal_pixels(
        [[0.1, 0.2, 0.3], [0.0, 0.0, 0.0]], [0.0, 0.1], [[0.1, 0.2, 0.3], [-0.05, 0.05, -0.1]],
        [0.0, 0.05], [2.0, 1.0, 8.0], [2.0, 1.0, 4.0],
    )  # fmt: skip
    assert pixels == [4, 0, 16]


def test_hidden_cases_defeat_the_library_shortcuts_on_substance():
    """Outside the sandbox, the library's nearest calls answer some hidden case wrong for every
    seed tried, for the reason each question is built around."""
    from om_teach.attacks.gradient_leakage import invert_first_layer
    from om_teach.fl.strategy import FedAdam, FedAvg, Update

    key = _key()
    checks = key.module
    for seed in range(10):
        # q1: FedAvg replaces the model by the mean; the hidden server steps are not 1.
        for current, models, counts, rate in key.cases("m02_q1_server_step", seed):
            assert rate != 1.0
            updates = [
                Update([np.asarray(a) for a in m], n) for m, n in zip(models, counts, strict=True)
            ]
            plain = FedAvg().aggregate(0, [np.asarray(a) for a in current], updates)
            want = checks.reference_m02_q1_server_step(current, models, counts, rate)
            assert not all(np.allclose(p, w) for p, w in zip(plain, want, strict=True))
        # q2: FedAdam's moving average is not Adagrad's running sum.
        adam_right = []
        for x, delta, m, v, eta, beta1, tau in key.cases("m02_q2_fedadagrad_step", seed):
            server = FedAdam(eta=eta, beta_1=beta1, tau=tau)
            server.m, server.v = [np.asarray(m)], [np.asarray(v)]
            [new_x] = server.aggregate(0, [np.asarray(x)], [Update([np.add(x, delta)], 1)])
            want = checks.reference_m02_q2_fedadagrad_step(x, delta, m, v, eta, beta1, tau)
            adam_right.append(np.allclose(new_x, want[0]))
        assert not any(adam_right)
        # q3: the inversion gives the standardized input, not the pixels.
        for wb, bb, wa, ba, mean, std in key.cases("m02_q3_steal_pixels", seed):
            standardized = invert_first_layer(np.subtract(wa, wb), np.subtract(ba, bb))
            pixels = checks.reference_m02_q3_steal_pixels(wb, bb, wa, ba, mean, std)
            assert np.allclose((np.asarray(pixels) - mean) / std, standardized, atol=1e-6)
            assert np.rint(np.clip(standardized, 0, 16)).tolist() != pixels
