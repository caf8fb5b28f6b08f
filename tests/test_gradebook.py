"""om_teach.grading.gradebook: durable grades, resumable runs, the LMS CSV and the feedback."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from om_teach.grading.gradebook import ERROR_FEEDBACK, Grade, Gradebook, write_feedback

from .conftest import ROOT

EXAM = "toolbox"
KEY = hashlib.sha256(b"answer key v1").hexdigest()
NEW_KEY = hashlib.sha256(b"answer key v2").hexdigest()
SANDBOX = "bubblewrap 0.8.0"
MAX = {"lagrange": 2.0, "mean": 3.0}
TITLES = {"lagrange": "Recover a lost share", "mean": "A private mean"}
HINTS = {"lagrange": "Evaluate the polynomial at zero.", "mean": "Clip before you add noise."}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def graded(student: str, points: dict[str, float], *, key: str = KEY, **extra) -> Grade:
    """A graded submission of ``student``'s file ``<student>.ipynb``."""
    fields = {"submission": f"{student}.ipynb", "submission_sha256": sha(student)} | extra
    return Grade(
        student_id=student,
        key_sha256=key,
        exam_id=EXAM,
        status="graded",
        points=points,
        max_points=MAX,
        passed=sum(points.values()) >= 3,
        sandbox=SANDBOX,
        seconds=1.5,
        **fields,
    )


def failed(student: str, error: str = "the sandbox could not start", **extra) -> Grade:
    """A submission the grader's own machinery failed to grade."""
    fields = {"submission": f"{student}.ipynb", "submission_sha256": sha(student)} | extra
    return Grade(
        student_id=student,
        key_sha256=KEY,
        exam_id=EXAM,
        status="error",
        points={},
        max_points=MAX,
        passed=None,
        sandbox=SANDBOX,
        error=error,
        **fields,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "gradebook.sqlite"


def start(book: Gradebook, *, key: str = KEY, sandbox: str = SANDBOX, regrade: bool = False):
    return book.start_run(exam_id=EXAM, key_sha256=key, sandbox=sandbox, jobs=2, regrade=regrade)


def counts(db: Path) -> tuple[int, int]:
    """Rows in grades and in question_points, read by a connection of its own."""
    with sqlite3.connect(db) as raw:
        grades = raw.execute("SELECT count(*) FROM grades").fetchone()[0]
        questions = raw.execute("SELECT count(*) FROM question_points").fetchone()[0]
    raw.close()
    return grades, questions


def test_record_and_read_back(db):
    """A graded and an errored grade come back equal, questions in the exam's order."""
    alice = graded("alice", {"mean": 3, "lagrange": 2}, flags=("student_id in notebook is 'al'",))
    bob = failed("bob")
    with Gradebook(db) as book:
        run = start(book)
        book.record(run, alice)
        book.record(run, bob)
    with Gradebook(db) as book:
        back = book.latest(EXAM)
    assert back == [alice, bob]
    assert list(back[0].points) == ["lagrange", "mean"] and back[0].total == 5
    assert back[0].max_total == 5 and back[1].max_points == MAX and back[1].points == {}
    assert back[0].sandbox == SANDBOX and back[1].error == "the sandbox could not start"


def test_is_graded_only_for_a_graded_same_submission_under_the_same_key(db):
    """Skipped only when graded under this file and key; an error, a new key or file is not."""
    with Gradebook(db) as book:
        run = start(book)
        book.record(run, graded("alice", {"lagrange": 2, "mean": 3}))
        book.record(run, failed("bob"))

        def is_graded(student, file_sha, key=KEY, exam=EXAM):
            return book.is_graded(
                exam_id=exam, student_id=student, submission_sha256=file_sha, key_sha256=key
            )

        assert is_graded("alice", sha("alice"))
        assert not is_graded("bob", sha("bob"))  # an error is retried
        assert not is_graded("alice", sha("alice"), key=NEW_KEY)  # the key changed: regrade
        assert not is_graded("alice", sha("alice, edited"))  # a new submission
        assert not is_graded("alice", sha("alice"), exam="another")
        assert not is_graded("carol", sha("carol"))


def test_going_back_to_an_older_file_grades_it_again(db):
    """A file graded before a newer one is not skipped: the newest grade must be of it."""
    with Gradebook(db) as book:
        run = start(book)
        book.record(run, graded("alice", {"lagrange": 2, "mean": 3}))
        book.record(run, graded("alice", {"lagrange": 0, "mean": 0}, submission_sha256=sha("v2")))
        assert not book.is_graded(
            exam_id=EXAM, student_id="alice", submission_sha256=sha("alice"), key_sha256=KEY
        )


def test_latest_and_the_csv_show_the_newest_grading_errors_included(db, tmp_path):
    """An error after a pass shows as the error, not the older pass, and is graded again."""
    with Gradebook(db) as book:
        run = start(book)
        book.record(run, graded("alice", {"lagrange": 2, "mean": 3}))
        book.record(run, failed("alice"))
        book.record(run, failed("bob"))
        book.record(run, graded("bob", {"lagrange": 0, "mean": 3}))
        latest = {g.student_id: g for g in book.latest(EXAM)}
        assert latest["alice"].status == "error" and latest["alice"].passed is None
        assert latest["bob"].status == "graded" and latest["bob"].total == 3
        assert not book.is_graded(
            exam_id=EXAM, student_id="alice", submission_sha256=sha("alice"), key_sha256=KEY
        )
        book.export_csv(EXAM, tmp_path / "lms.csv", ["lagrange", "mean"])
    with open(tmp_path / "lms.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[1:] == [["alice", "", "5", "error", "", ""], ["bob", "3", "5", "pass", "0", "3"]]


def test_a_failure_inside_record_leaves_none_of_the_grade(db):
    """A question row that fails to insert takes the grade row and earlier rows back out."""
    with Gradebook(db) as book:
        run = start(book)
    with sqlite3.connect(db) as raw:
        raw.execute(
            "CREATE TRIGGER crash BEFORE INSERT ON question_points WHEN NEW.question_id = 'mean' "
            "BEGIN SELECT RAISE(ABORT, 'simulated crash'); END"
        )
    raw.close()
    with Gradebook(db) as book:
        with pytest.raises(sqlite3.IntegrityError, match="simulated crash"):
            book.record(run, graded("alice", {"lagrange": 2, "mean": 3}))
        assert book.latest(EXAM) == []
        assert counts(db) == (0, 0)
        with sqlite3.connect(db) as raw:
            raw.execute("DROP TRIGGER crash")
        raw.close()
        book.record(run, graded("alice", {"lagrange": 2, "mean": 3}))
        assert counts(db) == (1, 2)


WRITER = textwrap.dedent(
    """
    import json, os, signal, sqlite3, sys

    armed = False
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)

        def trace(statement):
            if armed and statement.startswith("INSERT INTO question_points"):
                os.kill(os.getpid(), signal.SIGKILL)

        conn.set_trace_callback(trace)
        return conn

    sqlite3.connect = connect
    from om_teach.grading.gradebook import Grade, Gradebook

    first, second = (Grade(**fields) for fields in json.loads(sys.argv[2]))
    book = Gradebook(sys.argv[1])
    run = book.start_run(
        exam_id=first.exam_id, key_sha256=first.key_sha256, sandbox=first.sandbox, jobs=2,
        regrade=False,
    )
    book.record(run, first)
    armed = True
    book.record(run, second)
    """
)


def test_a_killed_run_loses_nothing_and_resumes(db):
    """SIGKILL in the middle of a record: the grade before it is whole, the one in it absent."""
    alice = graded("alice", {"lagrange": 2, "mean": 3})
    bob = graded("bob", {"lagrange": 2, "mean": 0})
    grades = json.dumps([asdict(alice), asdict(bob)])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", WRITER, str(db), grades], cwd=ROOT, env=env, capture_output=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert counts(db) == (1, 2)
    with Gradebook(db) as book:
        assert book.latest(EXAM) == [alice]
        run = start(book)
        todo = [
            g
            for g in (alice, bob)
            if not book.is_graded(
                exam_id=EXAM,
                student_id=g.student_id,
                submission_sha256=g.submission_sha256,
                key_sha256=KEY,
            )
        ]
        assert todo == [bob]
        book.record(run, bob)
        book.finish_run(run)
        assert book.latest(EXAM) == [alice, bob]
        assert [r.status for r in book.runs(EXAM)] == ["running", "finished"]


def test_two_runs_on_one_file_keep_both_run_rows(db):
    """Each run is kept with its sandbox, jobs and regrade flag; a killed one stays running."""
    with Gradebook(db) as book:
        first = start(book, sandbox="none (--unsafe-no-sandbox)")
    with Gradebook(db) as book:
        second = start(book, key=NEW_KEY, regrade=True)
        book.finish_run(second, status="finished")
        runs = book.runs(EXAM)
        with pytest.raises(ValueError, match="already finished"):
            book.finish_run(second)
        with pytest.raises(ValueError, match="finishes as one of"):
            book.finish_run(first, status="running")
    assert [r.id for r in runs] == [first, second]
    assert [r.status for r in runs] == ["running", "finished"]
    assert runs[0].sandbox == "none (--unsafe-no-sandbox)" and runs[0].finished is None
    assert runs[1].regrade is True and runs[1].key_sha256 == NEW_KEY and runs[1].finished
    assert runs[0].regrade is False and runs[0].jobs == 2


def test_record_refuses_a_grade_that_does_not_belong_to_the_run(db):
    """No run, a finished run, or another key: refused, and nothing is written."""
    with Gradebook(db) as book:
        run = start(book)
        with pytest.raises(ValueError, match="no run 99"):
            book.record(99, graded("alice", {"lagrange": 2, "mean": 3}))
        with pytest.raises(ValueError, match="under key"):
            book.record(run, graded("alice", {"lagrange": 2, "mean": 3}, key=NEW_KEY))
        book.finish_run(run)
        with pytest.raises(ValueError, match="already finished"):
            book.record(run, graded("alice", {"lagrange": 2, "mean": 3}))
        with pytest.raises(TypeError, match="takes a Grade"):
            book.record(run, {"student_id": "alice"})  # type: ignore[arg-type]
    assert counts(db) == (0, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"submission_sha256": "abc"}, "64 lowercase hex"),
        ({"status": "zero"}, "status must be one of"),
        ({"points": {"lagrange": 2}}, "scores every question"),
        ({"points": {"lagrange": 2.5, "mean": 0}}, r"lie in \[0, 2.0\]"),
        ({"points": {"lagrange": float("nan"), "mean": 0}}, "finite number"),
        ({"passed": None}, "passes or fails"),
        ({"error": "boom"}, "has no error"),
        ({"student_id": ""}, "student_id must be a non-empty"),
        ({"status": "error", "passed": None, "points": {}}, "must say what went wrong"),
        ({"status": "error", "passed": None, "error": "x"}, "no points and no verdict"),
    ],
)
def test_inconsistent_grades_are_refused(change, message):
    """A grade that scores too much, misses a question, or mixes error and verdict is refused."""
    with pytest.raises(ValueError, match=message):
        replace(graded("alice", {"lagrange": 2, "mean": 3}), **change)


def test_csv_has_one_row_per_student_with_the_newest_grade(db, tmp_path):
    """Sorted students, their newest grade, pass/fail/error and each question's points."""
    with Gradebook(db) as book:
        run = start(book)
        book.record(run, graded("erin", {"lagrange": 0, "mean": 0}))
        book.record(run, graded("bob", {"lagrange": 2, "mean": 0}))
        book.record(run, failed("carol"))
        book.record(run, graded("alice", {"lagrange": 2, "mean": 0.5}))
        book.record(run, graded("erin", {"lagrange": 2, "mean": 3}, submission_sha256=sha("v2")))
        book.export_csv(EXAM, tmp_path / "lms.csv", ["lagrange", "mean"])
    with open(tmp_path / "lms.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["student_id", "total", "max", "result", "lagrange", "mean"],
        ["alice", "2.5", "5", "fail", "2", "0.5"],
        ["bob", "2", "5", "fail", "2", "0"],
        ["carol", "", "5", "error", "", ""],
        ["erin", "5", "5", "pass", "2", "3"],
    ]
    assert os.stat(tmp_path / "lms.csv").st_mode & 0o777 == 0o600


def test_csv_refuses_questions_that_do_not_match_the_grades(db, tmp_path):
    """Exporting columns the grades do not score (or repeated ones) is an error, not a blank."""
    with Gradebook(db) as book:
        run = start(book)
        book.record(run, graded("alice", {"lagrange": 2, "mean": 3}))
        with pytest.raises(ValueError, match="regrade with the current exam"):
            book.export_csv(EXAM, tmp_path / "lms.csv", ["lagrange", "mean", "shuffle"])
        with pytest.raises(ValueError, match="repeat"):
            book.export_csv(EXAM, tmp_path / "lms.csv", ["lagrange", "lagrange"])
        with pytest.raises(ValueError, match="clash"):
            book.export_csv(EXAM, tmp_path / "lms.csv", ["total"])
    assert not (tmp_path / "lms.csv").exists()


def test_csv_is_replaced_atomically(db, tmp_path, monkeypatch):
    """The new CSV is complete before it replaces the old; a failed replace keeps the old."""
    target = tmp_path / "lms.csv"
    with Gradebook(db) as book:
        run = start(book)
        book.record(run, graded("alice", {"lagrange": 2, "mean": 3}))
        book.export_csv(EXAM, target, ["lagrange", "mean"])
        old = target.read_text()
        book.record(run, graded("bob", {"lagrange": 2, "mean": 0}))
        seen = []

        def replace(source, destination):
            seen.append((Path(source).read_text(), Path(destination).read_text()))
            raise OSError("disk full")

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(OSError, match="disk full"):
            book.export_csv(EXAM, target, ["lagrange", "mean"])
        monkeypatch.undo()
        assert target.read_text() == old
        assert sorted(p.name for p in tmp_path.iterdir() if "lms" in p.name) == ["lms.csv"]
        new, destination_then = seen[0]
        assert destination_then == old and new.count("\n") == 3 and "bob" in new
        book.export_csv(EXAM, target, ["lagrange", "mean"])
        assert target.read_text() == new


def test_feedback_hints_only_the_failures_and_shows_only_points(tmp_path):
    """Each question passed or failed with its points; hints for failures; no other numbers."""
    path = tmp_path / "alice.md"
    write_feedback(
        graded("alice", {"lagrange": 2, "mean": 0}), titles=TITLES, hints=HINTS, path=path
    )
    text = path.read_text()
    assert "**Not passed**: 2 of 5 points." in text
    assert "- Recover a lost share (lagrange): passed, 2 of 2 points." in text
    assert "- A private mean (mean): failed, 0 of 3 points.\n  Hint: Clip before you add" in text
    assert HINTS["lagrange"] not in text
    assert set(re.findall(r"\d+(?:\.\d+)?", text)) == {"0", "2", "3", "5"}
    assert "Flags" not in text and ERROR_FEEDBACK not in text
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_feedback_for_a_full_pass_has_no_hints(tmp_path):
    """A student who passed everything gets no hint at all."""
    path = tmp_path / "bob.md"
    write_feedback(graded("bob", {"lagrange": 2, "mean": 3}), titles=TITLES, hints=HINTS, path=path)
    text = path.read_text()
    assert "**Passed**: 5 of 5 points." in text and "Hint" not in text
    assert text.count(": passed,") == 2


def test_feedback_for_an_error_hides_the_error_and_gives_no_points(tmp_path):
    """The grader's own failure is reported as ours, with no points and no traceback."""
    path = tmp_path / "carol.md"
    grade = failed("carol", error="ValueError: reference([[1, 7], [2, 8675309]]) crashed")
    write_feedback(grade, titles=TITLES, hints=HINTS, path=path)
    text = path.read_text()
    assert ERROR_FEEDBACK in text
    assert "8675309" not in text and "reference" not in text and "ValueError" not in text
    assert "points" not in text and "Hint" not in text and not re.search(r"\d", text)


def test_feedback_lists_the_flags(tmp_path):
    """A flagged submission's feedback names the flag for the student to see."""
    flag = "student_id in notebook is 'bob', roster says 'alice'"
    path = tmp_path / "alice.md"
    grade = graded("alice", {"lagrange": 2, "mean": 3}, flags=(flag,))
    write_feedback(grade, titles=TITLES, hints=HINTS, path=path)
    assert (
        f"## Flags\n\nThe instructor will review these before the grade counts:\n\n- {flag}\n"
        in (path.read_text())
    )


def test_a_newer_schema_is_refused_and_left_untouched(db):
    """A gradebook written by a newer om-teach is refused with its version, not rewritten."""
    Gradebook(db).close()
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA user_version = 3")
    raw.close()
    with pytest.raises(ValueError, match="schema version 3, newer than the version 2"):
        Gradebook(db)
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 3
    raw.close()


def test_files_that_are_not_gradebooks_are_refused(tmp_path):
    """Another SQLite database, or a file that is no database at all, is not opened as one."""
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE notes (x)")
    raw.close()
    with pytest.raises(ValueError, match=r"not a gradebook.*notes"):
        Gradebook(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database, " * 64)
    with pytest.raises(ValueError, match="not an SQLite database"):
        Gradebook(junk)


def test_the_database_is_private_and_in_wal_mode(db):
    """The gradebook is created readable by its owner only, in WAL mode, schema version 2."""
    Gradebook(db).close()
    assert os.stat(db).st_mode & 0o777 == 0o600
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
    raw.close()


def clearances(db: Path) -> list[tuple]:
    """The clearances table's rows, read by a connection of its own."""
    with sqlite3.connect(db) as raw:
        rows = raw.execute(
            "SELECT student_id, submission_sha256, key_sha256, flags, reason, cleared_by "
            "FROM clearances ORDER BY id"
        ).fetchall()
    raw.close()
    return rows


def test_clear_records_who_when_why_and_which_grade(db):
    """Clearing a flag stores the reason, who and when, and the submission and key it clears."""
    flag = "student_id in the notebook is 'bob', roster: 'alice'"
    alice = graded("alice", {"lagrange": 2, "mean": 3}, flags=(flag,))
    with Gradebook(db) as book:
        book.record(start(book), alice)
        assert book.clearance(alice) is None
        cleared = book.clear(EXAM, "alice", reason="  bob is her login; checked  ", cleared_by="ta")
    assert (cleared.student_id, cleared.reason, cleared.cleared_by) == (
        "alice",
        "bob is her login; checked",
        "ta",
    )
    assert cleared.flags == (flag,) and cleared.cleared_at.startswith("20")
    assert clearances(db) == [
        ("alice", sha("alice"), KEY, json.dumps([flag]), "bob is her login; checked", "ta")
    ]
    with Gradebook(db) as book:
        assert book.clearance(alice) == cleared
        assert book.clearance(replace(alice, submission_sha256=sha("alice v2"))) is None
        assert book.clearance(replace(alice, key_sha256=NEW_KEY)) is None
        assert book.clearance(replace(alice, flags=(flag, "another flag"))) is None


@pytest.mark.parametrize(
    ("student", "reason", "by", "message"),
    [
        ("mallory", "checked", "ta", r"no grade of 'mallory' for exam 'toolbox'.*alice, bob"),
        ("alice", "", "ta", "give a reason"),
        ("alice", "  \n ", "ta", "give a reason"),
        ("alice", "checked", "", "who clears"),
        ("bob", "checked", "ta", "bob's newest grade has no flags: nothing to clear"),
    ],
)
def test_clear_refuses_bad_input_and_writes_nothing(db, student, reason, by, message):
    """An unknown student, an empty reason or clearer, or an unflagged grade: refused, unwritten."""
    with Gradebook(db) as book:
        run = start(book)
        book.record(run, graded("alice", {"lagrange": 2, "mean": 3}, flags=("a flag",)))
        book.record(run, graded("bob", {"lagrange": 2, "mean": 3}))
        with pytest.raises(ValueError, match=message):
            book.clear(EXAM, student, reason=reason, cleared_by=by)
    assert clearances(db) == []


def test_clearing_twice_is_refused(db):
    """A grade already cleared is not cleared again: the first reason stands."""
    with Gradebook(db) as book:
        book.record(start(book), graded("alice", {"lagrange": 2, "mean": 3}, flags=("a flag",)))
        book.clear(EXAM, "alice", reason="checked", cleared_by="ta")
        with pytest.raises(ValueError, match=r"already cleared by ta on .*: checked"):
            book.clear(EXAM, "alice", reason="again", cleared_by="prof")
    assert len(clearances(db)) == 1


def test_a_version_1_gradebook_is_upgraded_in_place_keeping_its_grades(db):
    """A gradebook from before clearances and stop reasons opens as version 2, its grades and
    runs intact."""
    alice = graded("alice", {"lagrange": 2, "mean": 3}, flags=("a flag",))
    with Gradebook(db) as book:
        book.record(start(book), alice)
    with sqlite3.connect(db) as raw:
        raw.execute("DROP TABLE clearances")
        raw.execute("ALTER TABLE grades DROP COLUMN stopped")
        raw.execute("PRAGMA user_version = 1")
    raw.close()
    with Gradebook(db) as book:
        assert book.latest(EXAM) == [alice] and len(book.runs(EXAM)) == 1
        book.clear(EXAM, "alice", reason="checked", cleared_by="ta")
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
    raw.close()


def test_current_key_is_the_key_of_the_newest_run(db):
    """The exam's current answer key, as the gradebook knows it: that of its newest run."""
    with Gradebook(db) as book:
        assert book.current_key(EXAM) is None
        start(book)
        start(book, key=NEW_KEY)
        assert book.current_key(EXAM) == NEW_KEY
        assert book.current_key("another") is None
