"""The toolbox exam end to end in the sandbox: the reference, a blank and a partial
submission, the library's own one-call answers, and a bank of cheats. Each outcome is exact."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import om_teach
from om_teach.grading.sandbox import FIRST_UID, bubblewrap_version

from .conftest import ROOT, grade_samples

SUBMISSIONS = ROOT / "tests" / "exams" / "toolbox"
ALL = {
    "q1_lagrange": 2,
    "q2_weighted_sum": 2,
    "q3_beaver_matmul": 2,
    "q4_unmask": 2,
    "q5_rdp_epsilon": 2,
}
NONE = dict.fromkeys(ALL, 0)
EXPECTED = {
    "reference": dict(ALL),
    "blank": dict(NONE),
    "partial": {**ALL, "q2_weighted_sum": 0, "q4_unmask": 0},
    "library_calls": dict(NONE),
    "cheat_read_key": {**ALL, "q1_lagrange": 0},
    "cheat_monkeypatch": {**ALL, "q2_weighted_sum": 0},
    "cheat_always_equal": {**ALL, "q5_rdp_epsilon": 0},
    "cheat_forged_result": {**ALL, "q4_unmask": 0},
    "cheat_infinite_loop": {**ALL, "q3_beaver_matmul": 0},
    "cheat_memory_bomb": {**ALL, "q1_lagrange": 0},
    "cheat_fork_bomb": {**ALL, "q2_weighted_sum": 0},
    "cheat_network": {**ALL, "q4_unmask": 0},
    "cheat_write_outside": {**ALL, "q5_rdp_epsilon": 0},
    "cheat_fake_output": {**ALL, "q1_lagrange": 0},
}
POISON = [
    Path(om_teach.__file__).parent / "om_teach_poison.py",
    Path(sys.prefix)
    / "lib"
    / f"python{sys.version_info.major}.{sys.version_info.minor}"
    / "site-packages"
    / "om_teach_poison.pth",
    Path("/usr/local/lib/om_teach_poison.txt"),
    Path.home() / "om_teach_poison.txt",
]

pytestmark = pytest.mark.skipif(bubblewrap_version() is None, reason="bubblewrap is not usable")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every sample submission once, with short limits so the suite stays fast."""
    tmp = tmp_path_factory.mktemp("toolbox")
    return grade_samples("toolbox", EXPECTED, tmp, cell_seconds=4, total_seconds=45)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_submission_scores_exactly_as_expected(graded, name):
    grades, _ = graded
    grade = grades[name]
    assert grade.status == "graded", grade.error
    assert grade.points == {q: float(p) for q, p in EXPECTED[name].items()}


def test_the_grader_survives_and_nothing_escapes(graded):
    """Every submission was graded (none crashed the grader), and no cheat wrote outside."""
    grades, run = graded
    assert set(grades) == set(EXPECTED)
    for path in POISON:
        assert not path.exists(), f"{path} was written by a submission"
    assert (run / "grades.csv").read_text().count("\n") == len(EXPECTED) + 1


def test_no_process_outlives_its_submission(graded):
    """After grading (fork bomb and infinite loop included), no sandboxed process is left whose
    submission is finished (its scratch folder gone); runs still going elsewhere, and dead
    processes not yet reaped, are ignored."""
    import psutil

    orphans = []
    for p in psutil.process_iter(["pid", "uids", "cmdline", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:  # dead, waiting for init to reap it
            continue
        if p.info["uids"] and p.info["uids"].real >= FIRST_UID:
            files = [a for a in p.info["cmdline"] or [] if a.endswith("kernel.json")]
            if not files or not Path(files[0]).exists():
                orphans.append(p.info)
    assert orphans == []


def test_the_exam_measures_the_student_not_the_library(graded):
    """Answering each question with the matching om_teach call scores 0."""
    grades, _ = graded
    assert grades["library_calls"].total == 0
    assert not grades["library_calls"].passed


def test_cheats_see_no_key_and_no_network(graded):
    """The executed notebooks (kept for instructors) show the cheats failing."""
    _, run = graded
    read_key = (run / "executed" / "cheat-read-key.ipynb").read_text()
    assert "cheat: no answer key found" in read_key
    network = (run / "executed" / "cheat-network.ipynb").read_text()
    assert "cheat: network unreachable" in network
