"""``om-teach exam check``: what a student runs before submitting. It validates the notebook,
runs it offline top to bottom, and reports each question's public self-check. It uses no key:
passing the self-checks is no promise of passing the hidden checks."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from om_teach.grading.spec import (
    Exam,
    ExamError,
    defined_functions,
    load_exam,
    parameters_cell,
    read_notebook,
)
from om_teach.runner import run_notebook


@dataclass(frozen=True)
class QuestionStatus:
    """One question of a checked notebook."""

    id: str
    title: str
    defined: bool
    self_check: str  # "passed", "failed: <error>", or "not run"


def find_exam(notebook: Path, nb) -> Exam:
    """The exam a notebook belongs to: named in its metadata, looked up under exams/."""
    from om_teach.syllabus import repo_root

    exam_id = nb.metadata.get("om_teach", {}).get("exam")
    if not exam_id:
        raise ExamError(f"{notebook}: the notebook does not say which exam it is; pass --exam DIR")
    return load_exam(repo_root() / "exams" / exam_id)


def check(notebook: Path, exam: Exam | None = None) -> list[QuestionStatus]:
    """Validate and run ``notebook``; each question's definition and self-check status."""
    nb = read_notebook(notebook)
    exam = exam or find_exam(notebook, nb)
    parameters = parameters_cell(nb)
    if parameters is None or "student_id" not in parameters.source:
        raise ExamError(
            f"{notebook}: the first code cell must be tagged parameters and set student_id"
        )
    defined = defined_functions(nb)
    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / "checked.ipynb"
        run_notebook(
            notebook,
            executed,
            budget_seconds=exam.limits.total_seconds,
            budget_mb=exam.limits.memory_mb,
            allow_errors=True,
        )
        ran = read_notebook(executed) if executed.is_file() else nb
    outcome = {}
    for cell in ran.cells:
        info = cell.metadata.get("om_teach", {})
        if cell.cell_type == "code" and info.get("role") == "self-check":
            errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
            if errors:
                outcome[info["question"]] = f"failed: {errors[0].ename}: {errors[0].evalue}"[:160]
            elif cell.get("execution_count"):
                outcome[info["question"]] = "passed"
    return [
        QuestionStatus(q.id, q.title, q.function in defined, outcome.get(q.id, "not run"))
        for q in exam.questions
    ]


def report(statuses: list[QuestionStatus]) -> str:
    """A table for the student, one line a question."""
    lines = []
    for s in statuses:
        mark = "✓" if s.defined and s.self_check == "passed" else "✗"
        defined = "" if s.defined else " (function not defined)"
        lines.append(f"{mark} {s.id:22} {s.self_check}{defined}")
    passed = sum(s.self_check == "passed" for s in statuses)
    lines.append(
        f"\n{passed} of {len(statuses)} self-checks pass. The grader runs hidden checks on "
        "inputs drawn from your own seed: self-checks are examples, not the grade."
    )
    return "\n".join(lines)
