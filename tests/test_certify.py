"""om-teach certify signs only clean grades: the newest grading under the current answer key,
made in the sandbox, passed, and unflagged or cleared by the instructor with a recorded reason.
Each refused student gets one line saying why. Gradebooks are built directly, not graded."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from om_teach import cli
from om_teach.grading.gradebook import Grade, Gradebook
from om_teach.grading.grader import UNSAFE
from om_teach.grading.key import AnswerKey
from om_teach.grading.spec import load_exam

from .conftest import ROOT

TINY = ROOT / "tests" / "exams" / "tiny"
KEY = hashlib.sha256(b"answer key v1").hexdigest()
NEW_KEY = hashlib.sha256(b"answer key v2").hexdigest()
SANDBOX = "bubblewrap 0.8.0"
FLAG = "student_id in the notebook is 'bob', roster: 'alice'"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def graded(student: str, points: float = 1.0, **extra) -> Grade:
    """A grade of ``student``'s file on the tiny exam (pass mark 0.5 of 1 point)."""
    fields = {"submission_sha256": sha(student), "key_sha256": KEY, "sandbox": SANDBOX} | extra
    return Grade(
        student_id=student,
        submission=f"{student}.ipynb",
        exam_id="tiny",
        status="graded",
        points={"q1_mean": points},
        max_points={"q1_mean": 1.0},
        passed=points >= 0.5,
        **fields,
    )


def errored(student: str) -> Grade:
    """A grading of ``student``'s file that the grader's machinery failed."""
    return Grade(
        student_id=student,
        submission=f"{student}.ipynb",
        submission_sha256=sha(student),
        key_sha256=KEY,
        exam_id="tiny",
        status="error",
        points={},
        max_points={"q1_mean": 1.0},
        passed=None,
        sandbox=SANDBOX,
        error="the kernel never ran",
    )


def record(db: Path, *grades: Grade, key: str = KEY, sandbox: str = SANDBOX) -> None:
    """Record ``grades`` in one finished run under ``key``."""
    with Gradebook(db) as book:
        run = book.start_run(exam_id="tiny", key_sha256=key, sandbox=sandbox, jobs=1, regrade=False)
        for grade in grades:
            book.record(run, grade)
        book.finish_run(run)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A gradebook path, with a signing key made in a home of the test's own."""
    monkeypatch.setenv("OM_TEACH_HOME", str(tmp_path / "home"))
    assert cli.main(["certify", "init-key"]) == 0
    return tmp_path / "run" / "gradebook.sqlite"


def certify(db: Path, capsys: pytest.CaptureFixture, *options: str) -> tuple[list[str], str]:
    """Run the README's ``om-teach certify``; the certificates written and what it printed."""
    out = db.parent / "certificates"
    code = cli.main(
        ["certify", "--gradebook", str(db), "--exam", str(TINY), "--out", str(out), *options]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    return sorted(p.stem for p in out.iterdir()), printed.out


def clear(db: Path, capsys: pytest.CaptureFixture, *options: str) -> tuple[int, str]:
    """Run ``om-teach certify clear``; its exit code and everything it printed."""
    code = cli.main(["certify", "clear", *options, "--gradebook", str(db), "--exam", str(TINY)])
    printed = capsys.readouterr()
    return code, printed.out + printed.err


def test_a_flagged_passing_grade_is_not_certified(db, capsys):
    """A pass whose notebook names another student is refused, with the flag and the fix."""
    db.parent.mkdir()
    record(db, graded("alice", flags=(FLAG,)), graded("bob"))
    certified, printed = certify(db, capsys)
    assert certified == ["bob"]
    assert f"not certified: alice: flagged: {FLAG} (clear it with: " in printed
    assert f'om-teach certify clear alice --reason "..." --gradebook {db} --exam {TINY})' in printed
    assert "1 certificate(s)" in printed
    public = db.parent.parent / "home" / "signing-key.pub"
    cert = db.parent / "certificates" / "bob.json"
    assert cli.main(["verify", str(cert), "--public-key", str(public)]) == 0
    assert "valid: bob passed tiny with 1/1" in capsys.readouterr().out


def test_a_grade_made_without_the_sandbox_is_not_certified(db, capsys):
    """A pass graded with --unsafe-no-sandbox earns no certificate, and the line says why."""
    db.parent.mkdir()
    record(db, graded("alice", sandbox=UNSAFE), sandbox=UNSAFE)
    certified, printed = certify(db, capsys)
    assert certified == []
    assert "not certified: alice: graded without a sandbox (--unsafe-no-sandbox)" in printed


def test_an_errored_newest_grading_is_not_certified(db, capsys):
    """A pass, then a grading of the same file that errored: the error stands, uncertified."""
    db.parent.mkdir()
    record(db, graded("alice"))
    record(db, errored("alice"))
    certified, printed = certify(db, capsys)
    assert certified == []
    assert "not certified: alice: its newest grading is an error" in printed


def test_a_grade_under_an_older_key_is_not_certified(db, capsys):
    """After the key changes, only grades made under the new key are certified."""
    db.parent.mkdir()
    record(db, graded("alice"), graded("bob"))
    record(db, graded("bob", key_sha256=NEW_KEY), key=NEW_KEY)
    certified, printed = certify(db, capsys)
    assert certified == ["bob"]
    assert f"not certified: alice: graded under answer key {KEY[:12]}" in printed
    assert f"not the current {NEW_KEY[:12]}" in printed


def test_the_current_key_can_be_named_with_answer_key(db, capsys):
    """--answer-key DIR makes that key current: grades under the gradebook's key are refused."""
    db.parent.mkdir()
    exam = load_exam(TINY)
    tiny_key = AnswerKey(exam, TINY / "key").sha256
    record(db, graded("alice"))
    record(db, graded("bob", key_sha256=tiny_key), key=tiny_key)
    record(db, graded("carol"))
    certified, printed = certify(db, capsys, "--answer-key", str(TINY / "key"))
    assert certified == ["bob"]
    assert "not certified: alice: graded under answer key" in printed
    assert "not certified: carol: graded under answer key" in printed


def test_a_failing_grade_is_listed_with_its_score(db, capsys):
    """A student who did not pass is refused too, with the score, and nothing else is said."""
    db.parent.mkdir()
    record(db, graded("bob", points=0.0))
    certified, printed = certify(db, capsys)
    assert certified == []
    assert "not certified: bob: did not pass (0/1)\n" in printed


def test_a_cleared_flag_is_certified_and_its_reason_recorded(db, capsys):
    """Cleared with a reason, the flagged pass is certified; the reason stays in the gradebook."""
    db.parent.mkdir()
    record(db, graded("alice", flags=(FLAG,)))
    reason = "the template said bob; alice's login, checked"
    code, printed = clear(db, capsys, "alice", "--reason", reason, "--by", "prof")
    assert code == 0, printed
    assert f"cleared: alice ({FLAG}) by prof: {reason}" in printed
    certified, printed = certify(db, capsys)
    assert certified == ["alice"]
    assert "certified: alice, flags cleared by prof on 20" in printed and reason in printed
    with sqlite3.connect(db) as raw:
        rows = raw.execute(
            "SELECT student_id, submission_sha256, key_sha256, reason, cleared_by, cleared_at "
            "FROM clearances"
        ).fetchall()
    raw.close()
    ((student, submission, key, why, by, when),) = rows
    assert (student, submission, key, why, by) == ("alice", sha("alice"), KEY, reason, "prof")
    assert when.startswith("20")


def test_a_clearance_does_not_carry_over_to_a_new_submission(db, capsys):
    """A new file with the same flag must be reviewed again: the old clearance was for the old."""
    db.parent.mkdir()
    record(db, graded("alice", flags=(FLAG,)))
    assert clear(db, capsys, "alice", "--reason", "checked", "--by", "prof")[0] == 0
    record(db, graded("alice", flags=(FLAG,), submission_sha256=sha("alice v2")))
    certified, printed = certify(db, capsys)
    assert certified == [] and "not certified: alice: flagged" in printed


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("mallory", "--reason", "checked"), "no grade of 'mallory' for exam 'tiny'"),
        (("alice", "--reason", ""), "give a reason"),
        (("alice", "--reason", "   "), "give a reason"),
        (("bob", "--reason", "checked"), "nothing to clear"),
    ],
)
def test_bad_clear_input_is_refused_and_changes_nothing(db, capsys, options, message):
    """Clearing an unknown student, with an empty reason, or an unflagged grade: an error, and
    alice stays uncertified."""
    db.parent.mkdir()
    record(db, graded("alice", flags=(FLAG,)), graded("bob"))
    code, printed = clear(db, capsys, *options)
    assert code == 2 and message in printed
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT count(*) FROM clearances").fetchone()[0] == 0
    raw.close()
    assert certify(db, capsys)[0] == ["bob"]


def test_a_missing_gradebook_is_an_error_not_a_new_file(db, capsys):
    """A mistyped gradebook path is named; no empty gradebook is left behind."""
    code, printed = clear(db, capsys, "alice", "--reason", "checked")
    assert code == 2 and f"no gradebook at {db}" in printed
    out = str(db.parent / "certificates")
    assert cli.main(["certify", "--gradebook", str(db), "--exam", str(TINY), "--out", out]) == 2
    assert f"no gradebook at {db}" in capsys.readouterr().err
    assert not db.exists()
