"""The open research exam (module 10) end to end in the sandbox: reference, blank, partial and
library-call samples scoring exactly as designed, with no node anywhere; and the key's hidden
cases checked against the library they are built to outwit."""

from __future__ import annotations

import numpy as np
import pytest

from om_teach.crypto.secagg import (
    AdvertisedKeys,
    EncryptedShares,
    MaskedInput,
    SecAggError,
    Server,
    UnmaskResponse,
)
from om_teach.grading.key import AnswerKey
from om_teach.grading.sandbox import bubblewrap_version
from om_teach.grading.spec import load_exam

from .conftest import ROOT, assert_scores, check_exam_skeleton, grade_samples

EXAM = ROOT / "exams" / "open_research"
ALL = {
    "q1_token_scopes": 2,
    "q2_retry_delays": 2,
    "q3_header_problems": 2,
    "q4_cycle_outcome": 2,
    "q5_unmask_plan": 2,
}
EXPECTED = {
    "reference": dict(ALL),
    "blank": dict.fromkeys(ALL, 0),
    "partial": {**ALL, "q2_retry_delays": 0, "q5_unmask_plan": 0},
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
    """Reference 10, blank 0, partial 6 (retries refusals, never caps; counts the abort of a
    client that refuses to unmask), library calls 0. Partial passes at exactly 60%."""
    assert_scores(graded[name], EXPECTED[name])
    assert graded[name].passed == (name in ("reference", "partial"))


def test_the_notebook_has_every_question_in_order_and_a_skeleton_for_each():
    check_exam_skeleton("open_research")


def test_hidden_cases_defeat_the_library_shortcuts_on_substance():
    """For every seed tried: the library's unsalted digest matches no stored hash, its client's
    uncapped schedule differs, safetensors cannot load a header without its data, cycles
    refuse reports, and secure aggregation's server aborts where the node refuses a message and
    goes on."""
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
        # q5: where the node refuses a repeated or a stranger's unmask message and goes on, the
        # library's server aborts; and the request it makes never lists a client on both sides,
        # so only an earlier request makes a client refuse.
        plans = [
            (case, checks.reference_q5_unmask_plan(*case))
            for case in key.cases("q5_unmask_plan", seed)
        ]
        noisy = [
            case
            for case, plan in plans
            if plan["abort"] is None
            and (len(set(case[4])) < len(case[4]) or not set(case[4]) <= set(case[3]))
        ]
        assert noisy
        for t, u1, u2, u3, responses, _ in noisy:
            with pytest.raises(SecAggError, match=r"more than once|outside U3"):
                _library_secagg_server(t, u1, u2, u3).unmask(
                    [UnmaskResponse(u, {}, {}) for u in responses]
                )
        requests = [plan["request"] for _, plan in plans if plan["request"]]
        assert all(not set(r["survivors"]) & set(r["dropped"]) for r in requests)
        assert any(plan["client_refuses"] for _, plan in plans)


def _library_secagg_server(t, u1, u2, u3):
    """secagg's server after three rounds of stand-in keys, shares and masked inputs."""
    server = Server(threshold=t, vector_length=1)
    server.advertise_keys([AdvertisedKeys(u, bytes([u]) * 32, bytes([u + 100]) * 32) for u in u1])
    server.share_keys([[EncryptedShares(u, v, b"") for v in u1 if v != u] for u in u2])
    server.masked_input([MaskedInput(u, np.zeros(1, dtype=np.uint32), 32) for u in u3])
    return server
