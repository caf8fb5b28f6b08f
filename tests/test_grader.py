"""The grader's machinery, on a one-question exam: seeds, sandbox, gradebook, resume, regrade,
errors, feedback, certificates, and the student's exam check."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from om_teach.grading import grader
from om_teach.grading.gradebook import Gradebook
from om_teach.grading.key import AnswerKey, same
from om_teach.grading.sandbox import bubblewrap_version
from om_teach.grading.spec import ExamError, load_exam

from .conftest import ROOT

TINY = ROOT / "tests" / "exams" / "tiny"
SECRET = b"instructor secret"
needs_bwrap = pytest.mark.skipif(bubblewrap_version() is None, reason="bubblewrap is not usable")


def _roster(tmp_path: Path, **files: str) -> list[tuple[Path, str]]:
    """Copy sample submissions into tmp_path under the given student ids."""
    rows = []
    for student, name in files.items():
        shutil.copy(TINY / "submissions" / f"{name}.ipynb", tmp_path / f"{student}.ipynb")
        rows.append((tmp_path / f"{student}.ipynb", student))
    return rows


def _grade(tmp_path, roster, *, key=TINY / "key", **kw):
    exam = load_exam(TINY)
    return grader.grade(
        exam,
        AnswerKey(exam, key),
        roster,
        out=tmp_path / "run",
        secret=SECRET,
        progress=False,
        **kw,
    )


def test_seeds_are_an_hmac_of_the_secret_and_the_id():
    """Each student gets their own seed; without the secret nobody can compute it."""
    a, b = grader.student_seed(SECRET, "alice"), grader.student_seed(SECRET, "bob")
    assert a != b and a == grader.student_seed(SECRET, "alice")
    assert a != grader.student_seed(b"other secret", "alice")
    assert 0 <= a < 2**63


def test_hidden_inputs_differ_between_students():
    exam = load_exam(TINY)
    key = AnswerKey(exam, TINY / "key")
    alice = key.cases("q1_mean", grader.student_seed(SECRET, "alice"))
    bob = key.cases("q1_mean", grader.student_seed(SECRET, "bob"))
    assert alice != bob and json.loads(json.dumps(alice)) == alice


@needs_bwrap
def test_grades_right_and_wrong_and_resumes(tmp_path):
    """Right scores full, wrong scores 0; a second run skips both and loses nothing."""
    roster = _roster(tmp_path, alice="right", bob="wrong")
    grades = {g.student_id: g for g in _grade(tmp_path, roster, jobs=2)}
    assert grades["alice"].points == {"q1_mean": 1.0} and grades["alice"].passed
    assert grades["bob"].points == {"q1_mean": 0.0} and not grades["bob"].passed
    assert grades["alice"].sandbox.startswith("bubblewrap")
    assert any("roster" in flag for flag in grades["alice"].flags)  # notebook says "your-id"
    assert _grade(tmp_path, roster) == []
    with Gradebook(tmp_path / "run" / "gradebook.sqlite") as book:
        assert [r.status for r in book.runs("tiny")] == ["finished", "finished"]
        assert {g.student_id: g.total for g in book.latest("tiny")} == {"alice": 1.0, "bob": 0.0}
    csv = (tmp_path / "run" / "grades.csv").read_text().splitlines()
    assert csv == ["student_id,total,max,result,q1_mean", "alice,1,1,pass,1", "bob,0,1,fail,0"]
    feedback = (tmp_path / "run" / "feedback" / "bob.md").read_text()
    assert "Divide the sum" in feedback  # the hint, never the hidden inputs
    hidden = AnswerKey(load_exam(TINY), TINY / "key").cases(
        "q1_mean", grader.student_seed(SECRET, "bob")
    )
    assert str(hidden[0][0][0]) not in feedback


@needs_bwrap
def test_regrade_after_the_key_changes(tmp_path):
    """A new key hash grades again; --regrade forces it under the same key."""
    roster = _roster(tmp_path, alice="right")
    assert len(_grade(tmp_path, roster)) == 1
    key = tmp_path / "key"
    shutil.copytree(TINY / "key", key)
    (key / "checks.py").write_text((key / "checks.py").read_text() + "\n# tightened\n")
    assert len(_grade(tmp_path, roster, key=key)) == 1
    assert _grade(tmp_path, roster, key=key) == []
    assert len(_grade(tmp_path, roster, key=key, regrade=True)) == 1


@needs_bwrap
def test_machinery_failure_is_an_error_and_is_retried(tmp_path):
    """A kernel that cannot start is recorded as an error, not a 0, and the next run retries."""
    roster = _roster(tmp_path, alice="right")
    exam = load_exam(TINY)
    broken = type(exam.limits)(**{**exam.limits.__dict__, "memory_mb": 5})  # python cannot start
    starved = type(exam)(**{**exam.__dict__, "limits": broken})
    key = AnswerKey(exam, TINY / "key")
    (grade,) = grader.grade(
        starved, key, roster, out=tmp_path / "run", secret=SECRET, progress=False
    )
    assert grade.status == "error" and "never ran" in grade.error
    assert "problem on our side" in (tmp_path / "run" / "feedback" / "alice.md").read_text()
    (grade,) = grader.grade(exam, key, roster, out=tmp_path / "run", secret=SECRET, progress=False)
    assert grade.status == "graded" and grade.total == 1.0


def test_refuses_without_a_sandbox_unless_told(tmp_path, monkeypatch):
    """No bubblewrap: refuse, unless --unsafe-no-sandbox, which the gradebook records."""
    monkeypatch.setattr(grader, "bubblewrap_version", lambda: None)
    roster = _roster(tmp_path, alice="right")
    with pytest.raises(grader.GradingError, match="unsafe-no-sandbox"):
        _grade(tmp_path, roster)
    (grade,) = _grade(tmp_path, roster, unsafe_no_sandbox=True)
    assert grade.total == 1.0 and grade.sandbox == grader.UNSAFE


def test_an_invalid_notebook_scores_zero_with_the_reason(tmp_path):
    (tmp_path / "carol.ipynb").write_text("{not json")
    (grade,) = _grade(tmp_path, [(tmp_path / "carol.ipynb", "carol")], unsafe_no_sandbox=True)
    assert grade.total == 0 and "not a valid notebook" in grade.flags[0]


def test_roster_errors_are_clear(tmp_path):
    bad = tmp_path / "roster.csv"
    bad.write_text("file,student\na.ipynb,alice\n")
    with pytest.raises(grader.GradingError, match="file,student_id"):
        grader.read_roster(bad)
    bad.write_text("file,student_id\na.ipynb,../etc\n")
    with pytest.raises(grader.GradingError, match="letters, digits"):
        grader.read_roster(bad)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace("pass_mark = 0.5", "pass_mark = 5"), "pass_mark"),
        (lambda s: s.replace('function = "mean"', 'function = "not a name"'), "not a name"),
        (lambda s: s.replace("points = 1", 'points = "one"'), "'points' has the wrong type"),
        (lambda s: s + "\n[[questions\n", "not valid TOML"),
        (lambda s: s.replace("[limits]", "[limits]\nbogus = 1"), "bogus"),
    ],
)
def test_malformed_exam_spec_names_the_file(tmp_path, edit, message):
    shutil.copytree(TINY, tmp_path / "tiny")
    spec = tmp_path / "tiny" / "exam.toml"
    spec.write_text(edit(spec.read_text()))
    with pytest.raises(ExamError, match=message) as err:
        load_exam(tmp_path / "tiny")
    assert str(spec) in str(err.value)


def test_plain_json_comparison():
    assert same([1, 2.0000000001], [1, 2.0], 1e-9) and not same([1, 2.1], [1, 2.0], 1e-9)
    assert not same(True, 1) and not same("1", 1) and not same({"a": 1}, {"b": 1})


def _cli(*args, env=None, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "om_teach.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )


@needs_bwrap
def test_grade_certify_verify_end_to_end(tmp_path):
    """om-teach grade, certify init-key, certify, verify; an edited certificate fails."""
    import os

    _roster(tmp_path, alice="right", bob="wrong")
    (tmp_path / "roster.csv").write_text("file,student_id\nalice.ipynb,alice\nbob.ipynb,bob\n")
    env = {**os.environ, "OM_TEACH_SECRET": "s3cret", "OM_TEACH_HOME": str(tmp_path / "home")}
    run = tmp_path / "run"
    graded = _cli(
        "grade",
        TINY,
        "--roster",
        tmp_path / "roster.csv",
        "--key",
        TINY / "key",
        "--out",
        run,
        "-j",
        "2",
        env=env,
    )
    assert graded.returncode == 0, graded.stderr
    assert "alice" in graded.stdout and "1 graded" not in graded.stdout
    assert _cli("certify", "init-key", env=env).returncode == 0
    certs = tmp_path / "certs"
    book = run / "gradebook.sqlite"
    made = _cli("certify", "--gradebook", book, "--exam", TINY, "--out", certs, env=env)
    assert "not certified: alice: flagged" in made.stdout  # the sample keeps the template id
    assert not certs.exists() or not any(certs.iterdir())
    reason = "the sample notebook keeps the template id"
    cleared = _cli(
        "certify", "clear", "alice", "--reason", reason, "--gradebook", book, "--exam", TINY,
        env=env,
    )  # fmt: skip
    assert cleared.returncode == 0, cleared.stderr
    made = _cli("certify", "--gradebook", book, "--exam", TINY, "--out", certs, env=env)
    assert made.returncode == 0, made.stderr
    assert "not certified: bob: did not pass (0/1)" in made.stdout
    assert [p.name for p in certs.iterdir()] == ["alice.json"]
    public = tmp_path / "home" / "signing-key.pub"
    ok = _cli("verify", certs / "alice.json", "--public-key", public, env=env)
    assert ok.returncode == 0 and "valid: alice passed tiny" in ok.stdout
    forged = json.loads((certs / "alice.json").read_text())
    forged["student_id"] = "mallory"
    (certs / "mallory.json").write_text(json.dumps(forged))
    bad = _cli("verify", certs / "mallory.json", "--public-key", public, env=env)
    assert bad.returncode == 1 and "INVALID" in bad.stderr


def test_exam_check_reports_self_checks(tmp_path):
    """A student's check runs the notebook offline and reports each self-check."""
    right = _cli("exam", "check", TINY / "submissions" / "right.ipynb", "--exam", TINY)
    assert right.returncode == 0, right.stdout + right.stderr
    assert "✓ q1_mean" in right.stdout and "passed" in right.stdout
    wrong = _cli("exam", "check", TINY / "submissions" / "wrong.ipynb", "--exam", TINY)
    assert wrong.returncode == 1 and "failed: AssertionError" in wrong.stdout
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{}")
    result = _cli("exam", "check", broken, "--exam", TINY)
    assert result.returncode == 2 and "not a valid notebook" in result.stderr
