"""The open research exam (module 10) end to end in the sandbox: reference, blank, partial and
library-call samples scoring exactly as designed, with no node anywhere; and the key's hidden
cases checked against the library they are built to outwit."""

from __future__ import annotations

import pytest

from om_teach.grading.key import AnswerKey
from om_teach.grading.sandbox import bubblewrap_version
from om_teach.grading.spec import load_exam

from .conftest import ROOT, assert_scores, check_exam_skeleton, grade_samples

EXAM = ROOT / "exams" / "open_research"
ALL = {"q1_token_scopes": 2, "q2_retry_delays": 2, "q3_header_problems": 2, "q4_cycle_outcome": 2}
EXPECTED = {
    "reference": dict(ALL),
    "blank": dict.fromkeys(ALL, 0),
    "partial": {**ALL, "q2_retry_delays": 0},
    "library_calls": dict.fromkeys(ALL, 0),
}

sandboxed = pytest.mark.skipif(bubblewrap_version() is None, reason="bubblewrap is not usable")


def _key() -> AnswerKey:
    return AnswerKey(load_exam(EXAM), EXAM / "key")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    grades, _ = grade_samples(
        "open_research", EXPECTED, tmp_path_factory.mktemp("open"), total_seconds=45
    )
    return grades


@sandboxed
@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_submission_scores_exactly_as_expected(graded, name):
    """Reference 8, blank 0, partial 6 (retries refusals, never caps), library calls 0."""
    assert_scores(graded[name], EXPECTED[name])
    assert graded[name].passed == (name in ("reference", "partial"))


def test_the_notebook_has_every_question_in_order_and_a_skeleton_for_each():
    check_exam_skeleton("open_research")


def test_hidden_cases_defeat_the_library_shortcuts_on_substance():
    """For every seed tried: the library's unsalted digest matches no stored hash, its client's
    uncapped schedule differs, safetensors cannot load a header without its data, and cycles
    refuse reports."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from om_teach.node.auth import digest

    key = _key()
    checks = key.module
    for seed in range(10):
        for header, stored in key.cases("q1_token_scopes", seed):
            token = (header or "").partition(" ")[2].strip()
            assert all(digest(token) != entry["sha256"] for entry in stored)
        uncapped = []
        for outcomes, base, cap, retries in key.cases("q2_retry_delays", seed):
            delays, _ = checks.reference_q2_retry_delays(outcomes, base, cap, retries)
            uncapped.append([base * 2**k for k in range(len(delays))] != delays)
        assert any(uncapped)
        for header_hex, _ in key.cases("q3_header_problems", seed):
            with pytest.raises(SafetensorError):
                load(bytes.fromhex(header_hex))
        # q4: some report in every seed's cases is refused (forged, replayed, late or placeless),
        # so counting every requested key's reports is wrong.
        outcomes = [
            checks.reference_q4_cycle_outcome(*case) for case in key.cases("q4_cycle_outcome", seed)
        ]
        assert any(o["refused"] for o in outcomes)
        assert {o["status"] for o in outcomes} >= {"open"}
