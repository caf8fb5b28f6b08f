"""Which grades earn a certificate.

A student's grade is their newest grading, an error included. It is certified only when it was
graded in the sandbox, under the exam's current answer key, passed, and carries no flag that
the instructor has not cleared with a reason. Every other grade is refused, and each refusal
says why and what to do about it, so that the instructor can act on it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from om_teach.grading.gradebook import Clearance, Grade, Gradebook
from om_teach.grading.grader import UNSAFE
from om_teach.grading.spec import Exam


@dataclass(frozen=True)
class Decision:
    """One student's grade, the clearance of its flags, and every reason it is not certified."""

    grade: Grade
    clearance: Clearance | None
    refusals: tuple[str, ...]


def decide(book: Gradebook, exam: Exam, key_sha256: str) -> list[Decision]:
    """Whether each student of ``exam`` in the gradebook is certified, by student id."""
    decisions = []
    for grade in book.latest(exam.id):
        clearance = book.clearance(grade)
        how_to_clear = clear_command(grade.student_id, book.path, exam.folder)
        decisions.append(
            Decision(grade, clearance, refusals(grade, clearance, key_sha256, how_to_clear))
        )
    return decisions


def refusals(
    grade: Grade, clearance: Clearance | None, key_sha256: str, how_to_clear: str
) -> tuple[str, ...]:
    """Every reason ``grade`` earns no certificate under the current key; none when it earns one."""
    reasons = []
    if grade.status == "error":
        reasons.append(
            "its newest grading is an error (the grader's, not the student's): grade again"
        )
    elif not grade.passed:
        reasons.append(f"did not pass ({grade.total:g}/{grade.max_total:g})")
    if grade.sandbox == UNSAFE:
        reasons.append(
            "graded without a sandbox (--unsafe-no-sandbox): grade again in the sandbox with "
            "--regrade"
        )
    if grade.key_sha256 != key_sha256:
        reasons.append(
            f"graded under answer key {grade.key_sha256[:12]}…, not the current "
            f"{key_sha256[:12]}…: grade again under the current key"
        )
    if grade.flags and clearance is None:
        reasons.append(f"flagged: {'; '.join(grade.flags)} (clear it with: {how_to_clear})")
    return tuple(reasons)


def clear_command(student_id: str, gradebook: Path, exam_folder: Path) -> str:
    """The command line that clears a student's flags once the instructor has reviewed them."""
    return (
        f'om-teach certify clear {shlex.quote(student_id)} --reason "..." '
        f"--gradebook {shlex.quote(str(gradebook))} --exam {shlex.quote(str(exam_folder))}"
    )
