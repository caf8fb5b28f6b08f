"""The gradebook: every graded submission kept in SQLite, with the LMS export and the feedback.

Each graded submission is written in one transaction: its grade row and its per-question rows
commit together or not at all (SQLite's rollback journal and write-ahead log make a commit
atomic across a crash or a power cut: https://www.sqlite.org/atomiccommit.html,
https://www.sqlite.org/wal.html). A grading run that is killed halfway therefore loses nothing. A
later run asks :meth:`Gradebook.is_graded` and skips every submission already graded under the
same file and the same answer key. Errors are retried, and so is a submission graded under
another key. Each student's newest grading is their grade, an error included: an older pass
never stands in for a grading that failed.

A flag on a grade (the notebook names another student, say) keeps it from being certified until
the instructor reviews it and clears it with a reason (:meth:`Gradebook.clear`). A clearance
records which flags were cleared, by whom, when and why, for one submission (its sha256) under
one answer key (its sha256): a new file or a new key is reviewed again.

Threat model. The instructor runs the grader and owns the gradebook, the answer key, the roster
and the seed secret. Students' code runs in the sandbox, which never mounts the gradebook. The
gradebook holds hashes, points, statuses, flags, the grader's error messages and the
instructor's clearances (who, when, why). It never holds the hidden inputs, the student's outputs
or the expected values. Each student may learn their own feedback file and nothing else: per
question, passed or failed with its points, the instructor's hint for each failure, and the
flags raised on their submission. The error message stays in the gradebook for the instructor,
because a traceback could quote a hidden input. The CSV export holds the whole class's results
and is meant for the instructor's LMS only. The database, the CSV and the feedback files are
created readable by their owner only (mode 0600).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

STATUSES = ("graded", "error")
RUN_STATUSES = ("running", "finished", "interrupted", "failed")
CSV_COLUMNS = ("student_id", "total", "max", "result")
ERROR_FEEDBACK = (
    "Your submission could not be graded because of a problem on our side; it will be regraded."
)
_SHA256 = re.compile(r"[0-9a-f]{64}")

_SCHEMA_1 = (
    """CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        exam_id TEXT NOT NULL,
        key_sha256 TEXT NOT NULL,
        sandbox TEXT NOT NULL,
        jobs INTEGER NOT NULL CHECK (jobs >= 1),
        regrade INTEGER NOT NULL CHECK (regrade IN (0, 1)),
        started TEXT NOT NULL,
        finished TEXT,
        status TEXT NOT NULL
            CHECK (status IN ('running', 'finished', 'interrupted', 'failed'))
    )""",
    """CREATE TABLE grades (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL REFERENCES runs (id),
        exam_id TEXT NOT NULL,
        student_id TEXT NOT NULL,
        submission TEXT NOT NULL,
        submission_sha256 TEXT NOT NULL,
        key_sha256 TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('graded', 'error')),
        total REAL,
        max_total REAL NOT NULL,
        passed INTEGER CHECK (passed IN (0, 1)),
        sandbox TEXT NOT NULL,
        flags TEXT NOT NULL,
        error TEXT,
        seconds REAL NOT NULL,
        graded_at TEXT NOT NULL
    )""",
    "CREATE INDEX grades_by_student ON grades (exam_id, student_id, status, id)",
    """CREATE TABLE question_points (
        grade_id INTEGER NOT NULL REFERENCES grades (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        question_id TEXT NOT NULL,
        points REAL,
        max_points REAL NOT NULL,
        PRIMARY KEY (grade_id, question_id)
    )""",
)
_SCHEMA_2 = (
    """CREATE TABLE clearances (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        exam_id TEXT NOT NULL,
        student_id TEXT NOT NULL,
        submission_sha256 TEXT NOT NULL,
        key_sha256 TEXT NOT NULL,
        flags TEXT NOT NULL,
        reason TEXT NOT NULL CHECK (trim(reason) <> ''),
        cleared_by TEXT NOT NULL CHECK (trim(cleared_by) <> ''),
        cleared_at TEXT NOT NULL
    )""",
    "CREATE INDEX clearances_by_submission "
    "ON clearances (exam_id, student_id, submission_sha256, key_sha256, id)",
    "ALTER TABLE grades ADD COLUMN stopped TEXT",
)
MIGRATIONS = (_SCHEMA_1, _SCHEMA_2)
"""What brings a gradebook from each schema version to the next, starting from an empty file."""
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Grade:
    """One graded submission, or one the grader's own machinery failed to grade.

    ``points`` maps each question id to the points scored, in the exam's question order, and is
    empty on error. An error is the grader's fault, not the student's, so it carries no points
    and no verdict (``passed`` is None), and the next run grades the submission again.
    """

    student_id: str
    submission: str
    submission_sha256: str
    key_sha256: str
    exam_id: str
    status: str
    points: dict[str, float]
    max_points: dict[str, float]
    passed: bool | None
    sandbox: str
    flags: tuple[str, ...] = ()
    error: str | None = None
    seconds: float = 0.0
    stopped: str | None = None
    """Why the submission's own limits (memory, processes, time) stopped it, if they did: it
    is graded as it stands, never retried."""

    def __post_init__(self) -> None:
        for name in ("student_id", "submission", "exam_id", "sandbox"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("submission_sha256", "key_sha256"):
            _check_sha256(name, getattr(self, name))
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        max_points = {q: _number_of(f"max points of {q!r}", p) for q, p in self.max_points.items()}
        for q, p in max_points.items():
            if not isinstance(q, str) or not q:
                raise ValueError(f"question ids must be non-empty strings, got {q!r}")
            if p < 0:
                raise ValueError(f"max points of {q!r} must be at least 0, got {p}")
        points = {q: _number_of(f"points of {q!r}", p) for q, p in self.points.items()}
        if self.status == "graded":
            if set(points) != set(max_points):
                raise ValueError(
                    f"a graded submission scores every question: points for {sorted(points)}, "
                    f"max points for {sorted(max_points)}"
                )
            points = {q: points[q] for q in max_points}
            for q, p in points.items():
                if not 0 <= p <= max_points[q]:
                    raise ValueError(f"points of {q!r} must lie in [0, {max_points[q]}], got {p}")
            if not isinstance(self.passed, bool):
                raise ValueError(f"a graded submission passes or fails, got passed={self.passed!r}")
            if self.error is not None:
                raise ValueError(f"a graded submission has no error, got {self.error!r}")
            if self.stopped is not None and (not isinstance(self.stopped, str) or not self.stopped):
                raise ValueError(f"stopped must say why, got {self.stopped!r}")
        else:
            if points or self.passed is not None:
                raise ValueError("an error carries no points and no verdict (passed=None)")
            if not isinstance(self.error, str) or not self.error:
                raise ValueError("an error grade must say what went wrong in `error`")
        flags = tuple(self.flags)
        if not all(isinstance(f, str) and f for f in flags):
            raise ValueError(f"flags must be non-empty strings, got {flags!r}")
        seconds = _number_of("seconds", self.seconds)
        if seconds < 0:
            raise ValueError(f"seconds must be at least 0, got {seconds}")
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "max_points", max_points)
        object.__setattr__(self, "flags", flags)
        object.__setattr__(self, "seconds", seconds)

    @property
    def total(self) -> float:
        """The points scored over all questions (0 on error)."""
        return math.fsum(self.points.values())

    @property
    def max_total(self) -> float:
        """The points the exam is worth."""
        return math.fsum(self.max_points.values())


@dataclass(frozen=True)
class Clearance:
    """The instructor's word that a submission's flags, under one key, do not stop its grade."""

    exam_id: str
    student_id: str
    submission_sha256: str
    key_sha256: str
    flags: tuple[str, ...]
    reason: str
    cleared_by: str
    cleared_at: str

    def covers(self, grade: Grade) -> bool:
        """Whether this clears every flag of ``grade``, a grading of the same file and key."""
        mine = (self.exam_id, self.student_id, self.submission_sha256, self.key_sha256)
        theirs = (grade.exam_id, grade.student_id, grade.submission_sha256, grade.key_sha256)
        return mine == theirs and set(grade.flags) <= set(self.flags)


@dataclass(frozen=True)
class Run:
    """One invocation of the grader; ``status`` stays "running" when it was killed."""

    id: int
    exam_id: str
    key_sha256: str
    sandbox: str
    jobs: int
    regrade: bool
    started: str
    finished: str | None
    status: str


class Gradebook:
    """The grades of every exam, in one SQLite file (created, owner-only, when missing).

    Use it as a context manager, or call :meth:`close`. One connection, used by one thread.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._conn = sqlite3.connect(self.path, timeout=30)
        try:
            self._open()
        except BaseException:
            self._conn.close()
            raise

    def _open(self) -> None:
        self._conn.row_factory = sqlite3.Row
        try:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path} is not an SQLite database: {e}") from e
        self._check_version(version)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        with self._transaction():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version)
            if version == 0:
                tables = [r[0] for r in self._conn.execute("SELECT name FROM sqlite_master")]
                if tables:
                    raise ValueError(
                        f"{self.path} is an SQLite database but not a gradebook: it has no "
                        f"schema version and holds {sorted(tables)}"
                    )
            if version < SCHEMA_VERSION:
                self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Bring the schema from ``version`` up to the current one, in the open transaction."""
        for migration in MIGRATIONS[version:]:
            for statement in migration:
                self._conn.execute(statement)
        self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"{self.path} has gradebook schema version {version}, newer than the version "
                f"{SCHEMA_VERSION} this om-teach reads: upgrade om-teach to open it"
            )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction that holds the write lock from its start; all or nothing."""
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            yield

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Gradebook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_run(
        self, *, exam_id: str, key_sha256: str, sandbox: str, jobs: int, regrade: bool
    ) -> int:
        """Open a run, with the sandbox it grades in, and return its id."""
        if not isinstance(exam_id, str) or not exam_id:
            raise ValueError(f"exam_id must be a non-empty string, got {exam_id!r}")
        _check_sha256("key_sha256", key_sha256)
        if not isinstance(sandbox, str) or not sandbox:
            raise ValueError(f"name the sandbox the run grades in, got {sandbox!r}")
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
        if not isinstance(regrade, bool):
            raise TypeError(f"regrade must be a bool, got {regrade!r}")
        with self._transaction():
            cursor = self._conn.execute(
                "INSERT INTO runs (exam_id, key_sha256, sandbox, jobs, regrade, started, status) "
                "VALUES (?, ?, ?, ?, ?, ?, 'running')",
                (exam_id, key_sha256, sandbox, jobs, int(regrade), _now()),
            )
        return int(cursor.lastrowid)

    def finish_run(self, run_id: int, *, status: str = "finished") -> None:
        """Close a running run as "finished", "interrupted" or "failed"."""
        if status not in RUN_STATUSES[1:]:
            raise ValueError(f"a run finishes as one of {RUN_STATUSES[1:]}, got {status!r}")
        with self._transaction():
            self._running(run_id)
            self._conn.execute(
                "UPDATE runs SET status = ?, finished = ? WHERE id = ?", (status, _now(), run_id)
            )

    def runs(self, exam_id: str) -> list[Run]:
        """The runs of an exam, oldest first."""
        rows = self._conn.execute("SELECT * FROM runs WHERE exam_id = ? ORDER BY id", (exam_id,))
        return [Run(**{**dict(row), "regrade": bool(row["regrade"])}) for row in rows]

    def current_key(self, exam_id: str) -> str | None:
        """The answer key of the exam's newest run: the key its grades should be under."""
        row = self._conn.execute(
            "SELECT key_sha256 FROM runs WHERE exam_id = ? ORDER BY id DESC LIMIT 1", (exam_id,)
        ).fetchone()
        return None if row is None else row["key_sha256"]

    def is_graded(
        self, *, exam_id: str, student_id: str, submission_sha256: str, key_sha256: str
    ) -> bool:
        """Whether the student's newest grading graded this submission under this key.

        An error does not count, so it is retried; nor does an older grade of a file the
        student has since replaced, so going back to it grades it again.
        """
        row = self._newest(exam_id, student_id)
        if row is None:
            return False
        graded_as = (row["status"], row["submission_sha256"], row["key_sha256"])
        return graded_as == ("graded", submission_sha256, key_sha256)

    def record(self, run_id: int, grade: Grade) -> None:
        """Store a grade and its per-question points in one transaction, under a running run."""
        if not isinstance(grade, Grade):
            raise TypeError(f"record takes a Grade, got {type(grade).__name__}")
        with self._transaction():
            run = self._running(run_id)
            if (grade.exam_id, grade.key_sha256) != (run["exam_id"], run["key_sha256"]):
                raise ValueError(
                    f"run {run_id} grades exam {run['exam_id']!r} under key "
                    f"{run['key_sha256'][:12]}…, not exam {grade.exam_id!r} under key "
                    f"{grade.key_sha256[:12]}…"
                )
            graded = grade.status == "graded"
            cursor = self._conn.execute(
                "INSERT INTO grades (run_id, exam_id, student_id, submission, submission_sha256, "
                "key_sha256, status, total, max_total, passed, sandbox, flags, error, seconds, "
                "graded_at, stopped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    grade.exam_id,
                    grade.student_id,
                    grade.submission,
                    grade.submission_sha256,
                    grade.key_sha256,
                    grade.status,
                    grade.total if graded else None,
                    grade.max_total,
                    int(grade.passed) if graded else None,
                    grade.sandbox,
                    json.dumps(list(grade.flags)),
                    grade.error,
                    grade.seconds,
                    _now(),
                    grade.stopped,
                ),
            )
            self._conn.executemany(
                "INSERT INTO question_points (grade_id, position, question_id, points, max_points) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (cursor.lastrowid, position, q, grade.points.get(q), max_q)
                    for position, (q, max_q) in enumerate(grade.max_points.items())
                ],
            )

    def latest(self, exam_id: str) -> list[Grade]:
        """Each student's newest grading, an error included, sorted by student id."""
        rows = self._conn.execute(
            "SELECT * FROM grades AS g WHERE g.exam_id = ? AND g.id = ("
            "  SELECT max(h.id) FROM grades AS h"
            "  WHERE h.exam_id = g.exam_id AND h.student_id = g.student_id"
            ") ORDER BY g.student_id",
            (exam_id,),
        ).fetchall()
        return [self._grade(row) for row in rows]

    def clear(self, exam_id: str, student_id: str, *, reason: str, cleared_by: str) -> Clearance:
        """Clear the flags of the student's newest grading, recording why, by whom and when."""
        reason, cleared_by = reason.strip(), cleared_by.strip()
        if not reason:
            raise ValueError(
                f"give a reason for clearing {student_id}'s flags with --reason: it is kept in "
                "the gradebook beside the grade"
            )
        if not cleared_by:
            raise ValueError("name who clears the flags (--by NAME)")
        with self._transaction():
            grade = self._flagged(exam_id, student_id)
            clearance = Clearance(
                exam_id=exam_id,
                student_id=student_id,
                submission_sha256=grade.submission_sha256,
                key_sha256=grade.key_sha256,
                flags=grade.flags,
                reason=reason,
                cleared_by=cleared_by,
                cleared_at=_now(),
            )
            self._conn.execute(
                "INSERT INTO clearances (exam_id, student_id, submission_sha256, key_sha256, "
                "flags, reason, cleared_by, cleared_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    exam_id,
                    student_id,
                    clearance.submission_sha256,
                    clearance.key_sha256,
                    json.dumps(list(clearance.flags)),
                    reason,
                    cleared_by,
                    clearance.cleared_at,
                ),
            )
        return clearance

    def clearance(self, grade: Grade) -> Clearance | None:
        """The newest clearance of every flag of ``grade``; None when it has no flag to clear."""
        if not grade.flags:
            return None
        rows = self._conn.execute(
            "SELECT * FROM clearances WHERE exam_id = ? AND student_id = ? "
            "AND submission_sha256 = ? AND key_sha256 = ? ORDER BY id DESC",
            (grade.exam_id, grade.student_id, grade.submission_sha256, grade.key_sha256),
        ).fetchall()
        clearances = (_clearance(row) for row in rows)
        return next((c for c in clearances if c.covers(grade)), None)

    def export_csv(self, exam_id: str, path: Path, question_ids: Sequence[str]) -> None:
        """Write the LMS's CSV: one row per student with their newest grade, atomically.

        Columns: student_id, total, max, result (pass, fail or error), then each question's
        points in the order given. An error row leaves total and the questions blank.
        """
        questions = list(question_ids)
        if not questions or not all(isinstance(q, str) and q for q in questions):
            raise ValueError(f"name the exam's questions as non-empty strings, got {questions!r}")
        if len(set(questions)) != len(questions):
            raise ValueError(f"question ids repeat: {questions}")
        if clash := set(questions) & set(CSV_COLUMNS):
            raise ValueError(f"question ids {sorted(clash)} clash with the columns {CSV_COLUMNS}")
        grades = self.latest(exam_id)
        for grade in grades:
            if grade.status == "graded" and set(grade.points) != set(questions):
                raise ValueError(
                    f"{grade.student_id}'s grade scores questions {sorted(grade.points)}, "
                    f"not the {sorted(questions)} asked for: regrade with the current exam"
                )
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([*CSV_COLUMNS, *questions])
        for grade in grades:
            max_total = _format(grade.max_total) if grade.max_points else ""
            if grade.status == "graded":
                result = "pass" if grade.passed else "fail"
                cells = [_format(grade.points[q]) for q in questions]
                writer.writerow([grade.student_id, _format(grade.total), max_total, result, *cells])
            else:
                writer.writerow([grade.student_id, "", max_total, "error", *[""] * len(questions)])
        _write_atomically(Path(path), out.getvalue())

    def _newest(self, exam_id: str, student_id: str) -> sqlite3.Row | None:
        """The student's newest grading of the exam, whatever its status."""
        return self._conn.execute(
            "SELECT * FROM grades WHERE exam_id = ? AND student_id = ? ORDER BY id DESC LIMIT 1",
            (exam_id, student_id),
        ).fetchone()

    def _flagged(self, exam_id: str, student_id: str) -> Grade:
        """The student's newest grading, refused unless it has flags not yet cleared."""
        row = self._newest(exam_id, student_id)
        if row is None:
            students = self._conn.execute(
                "SELECT DISTINCT student_id FROM grades WHERE exam_id = ? ORDER BY student_id",
                (exam_id,),
            )
            names = ", ".join(s["student_id"] for s in students) or "none"
            raise ValueError(
                f"no grade of {student_id!r} for exam {exam_id!r} in {self.path} "
                f"(graded students: {names})"
            )
        grade = self._grade(row)
        if not grade.flags:
            raise ValueError(f"{student_id}'s newest grade has no flags: nothing to clear")
        if done := self.clearance(grade):
            raise ValueError(
                f"{student_id}'s flags are already cleared by {done.cleared_by} on "
                f"{done.cleared_at}: {done.reason}"
            )
        return grade

    def _running(self, run_id: int) -> sqlite3.Row:
        run = self._conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if run is None:
            raise ValueError(f"there is no run {run_id} in {self.path}")
        if run["status"] != "running":
            raise ValueError(f"run {run_id} is already {run['status']}")
        return run

    def _grade(self, row: sqlite3.Row) -> Grade:
        questions = self._conn.execute(
            "SELECT question_id, points, max_points FROM question_points "
            "WHERE grade_id = ? ORDER BY position",
            (row["id"],),
        ).fetchall()
        return Grade(
            student_id=row["student_id"],
            submission=row["submission"],
            submission_sha256=row["submission_sha256"],
            key_sha256=row["key_sha256"],
            exam_id=row["exam_id"],
            status=row["status"],
            points={q["question_id"]: q["points"] for q in questions if q["points"] is not None},
            max_points={q["question_id"]: q["max_points"] for q in questions},
            passed=None if row["passed"] is None else bool(row["passed"]),
            sandbox=row["sandbox"],
            flags=tuple(json.loads(row["flags"])),
            error=row["error"],
            seconds=row["seconds"],
            stopped=row["stopped"],
        )


def _clearance(row: sqlite3.Row) -> Clearance:
    fields = {**dict(row), "flags": tuple(json.loads(row["flags"]))}
    del fields["id"]
    return Clearance(**fields)


def write_feedback(
    grade: Grade, *, titles: Mapping[str, str], hints: Mapping[str, str], path: Path
) -> None:
    """Write a student's feedback in markdown, atomically.

    For each question it says whether it passed and gives its points. Each failure gets the
    instructor's hint. An error says the submission will be regraded and gives no points. The
    flags come last. The feedback is made from the grade alone, which holds no hidden input and
    no expected value. The grader's error message is left out, because a traceback could quote
    a hidden input.
    """
    lines = [
        f"# Feedback: {grade.exam_id}",
        "",
        f"- Student: {grade.student_id}",
        f"- Submission: {grade.submission}",
        "",
    ]
    if grade.status == "error":
        lines += [ERROR_FEEDBACK, ""]
    else:
        verdict = "Passed" if grade.passed else "Not passed"
        lines += [
            f"**{verdict}**: {_format(grade.total)} of {_format(grade.max_total)} points.",
            "",
            *(
                [
                    f"Your submission was stopped: {grade.stopped}. It is graded as it stands: "
                    "the questions it had not reached score 0.",
                    "",
                ]
                if grade.stopped
                else []
            ),
            "## Questions",
            "",
        ]
        for q, max_q in grade.max_points.items():
            got = grade.points[q]
            outcome = "passed" if got >= max_q else "failed"
            label = f"{titles[q]} ({q})" if titles.get(q) else q
            lines.append(f"- {label}: {outcome}, {_format(got)} of {_format(max_q)} points.")
            if outcome == "failed" and hints.get(q):
                lines.append("  Hint: " + hints[q].strip().replace("\n", "\n  "))
        lines.append("")
    if grade.flags:
        lines += ["## Flags", "", "The instructor will review these before the grade counts:", ""]
        lines += [f"- {flag}" for flag in grade.flags]
        lines.append("")
    _write_atomically(Path(path), "\n".join(lines))


def _check_sha256(name: str, value: object) -> None:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ValueError(f"{name} must be a sha256 in 64 lowercase hex digits, got {value!r}")


def _number_of(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _format(x: float) -> str:
    """Points as people write them: 2, 0.5, 1.25 (never 2.0 or 2.9999999999999996)."""
    return format(x, ".12g")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old file or the new, never half."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
