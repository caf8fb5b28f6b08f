"""Grading speed: om-teach's sandboxed grader against nbgrader's autograde (no sandbox).

Both grade copies of one correct submission of a one-question exam, in this one run: the
grader with bubblewrap at -j 1 and -j 2, the grader with --unsafe-no-sandbox (the difference
is the sandbox's own cost), and nbgrader autograde of an equivalent one-question assignment.
Seconds per submission are the whole command's wall time divided by the submissions, so each
tool's start-up is shared out as it would be in a real batch. The five-question toolbox exam
is timed the same way. nbgrader comes with the ``bench`` extra (``make bench`` installs it).

Run ``python benchmarks/bench_grader.py [--quick]``. It prints a markdown section to stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from om_teach.grading.grader import grade
from om_teach.grading.key import AnswerKey
from om_teach.grading.sandbox import bubblewrap_version
from om_teach.grading.spec import load_exam

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "exams" / "tiny"
TOOLBOX = ROOT / "exams" / "toolbox"
ANSWER = "def mean(values):\n    return sum(values) / len(values)\n"


def seconds_per_submission(exam_dir: Path, submission: Path, n: int, jobs: int, unsafe: bool):
    """Grade ``n`` copies of ``submission``; wall seconds per submission, and its grades."""
    exam = load_exam(exam_dir)
    key = AnswerKey(exam, exam_dir / "key")
    with tempfile.TemporaryDirectory() as tmp:
        roster = []
        for i in range(n):
            shutil.copy(submission, Path(tmp) / f"s{i}.ipynb")
            roster.append((Path(tmp) / f"s{i}.ipynb", f"s{i}"))
        start = time.perf_counter()
        grades = grade(
            exam,
            key,
            roster,
            out=Path(tmp) / "run",
            secret=b"bench",
            jobs=jobs,
            unsafe_no_sandbox=unsafe,
            progress=False,
        )
        wall = time.perf_counter() - start
    assert all(g.total == g.max_total for g in grades), [g.error or g.points for g in grades]
    return wall / n


def nbgrader_seconds_per_submission(n: int) -> float | None:
    """nbgrader autograde of ``n`` correct submissions of a one-question assignment."""
    nbgrader = Path(sys.executable).parent / "nbgrader"
    if not nbgrader.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp)
        (course / "nbgrader_config.py").write_text(
            'c = get_config()\nc.CourseDirectory.course_id = "bench"\n'
        )
        solution = new_code_cell(
            "def mean(values):\n    ### BEGIN SOLUTION\n"
            "    return sum(values) / len(values)\n    ### END SOLUTION",
            metadata={
                "nbgrader": {
                    "grade": False,
                    "solution": True,
                    "locked": False,
                    "grade_id": "mean",
                    "schema_version": 3,
                }
            },
        )
        tests = new_code_cell(
            "assert mean([1, 2, 3]) == 2\nassert abs(mean([0.5, 0.25]) - 0.375) < 1e-12",
            metadata={
                "nbgrader": {
                    "grade": True,
                    "solution": False,
                    "locked": True,
                    "grade_id": "test_mean",
                    "points": 1,
                    "schema_version": 3,
                }
            },
        )
        nb = new_notebook(cells=[solution, tests])
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        (course / "source" / "ps1").mkdir(parents=True)
        nbformat.write(nb, course / "source" / "ps1" / "ps1.ipynb")
        path = f"{nbgrader.parent}{os.pathsep}{os.environ.get('PATH', '')}"  # it runs alembic
        run = dict(cwd=course, capture_output=True, text=True, env={**os.environ, "PATH": path})
        made = subprocess.run([nbgrader, "generate_assignment", "ps1", "--force"], **run)
        assert made.returncode == 0, made.stderr[-2000:]
        released = nbformat.read(course / "release" / "ps1" / "ps1.ipynb", as_version=4)
        released.cells[0].source = ANSWER
        for i in range(n):
            folder = course / "submitted" / f"s{i}" / "ps1"
            folder.mkdir(parents=True)
            nbformat.write(released, folder / "ps1.ipynb")
        start = time.perf_counter()
        graded = subprocess.run([nbgrader, "autograde", "ps1", "--create", "--force"], **run)
        wall = time.perf_counter() - start
        assert graded.returncode == 0, graded.stderr[-2000:]
    return wall / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few submissions, for a smoke test")
    quick = parser.parse_args().quick
    n = 2 if quick else 20
    right = TINY / "submissions" / "right.ipynb"
    toolbox = ROOT / "tests" / "exams" / "toolbox" / "reference.ipynb"
    sandboxed = bubblewrap_version() is not None
    plans = [("om-teach, bubblewrap, -j 1", TINY, right, 1, False)] if sandboxed else []
    plans.append(("om-teach, no sandbox, -j 1", TINY, right, 1, True))
    if sandboxed and not quick:
        plans += [
            ("om-teach, bubblewrap, -j 2", TINY, right, 2, False),
            ("om-teach toolbox exam, bubblewrap, -j 1", TOOLBOX, toolbox, 1, False),
            ("om-teach toolbox exam, bubblewrap, -j 2", TOOLBOX, toolbox, 2, False),
        ]
    rows = [
        (name, len(load_exam(exam).questions), seconds_per_submission(exam, sub, n, jobs, unsafe))
        for name, exam, sub, jobs, unsafe in plans
    ]
    if not quick:
        rows.append(("nbgrader autograde (no sandbox)", 1, nbgrader_seconds_per_submission(n)))
    print("## Grading speed\n")
    print(
        f"{n} copies of a correct submission per row, graded in one run on this machine; seconds "
        "per submission = the command's wall time / submissions (start-up included).\n"
    )
    print("| grader | questions | s / submission |\n|---|---:|---:|")
    for name, questions, seconds in rows:
        shown = "not installed (make bench installs it)" if seconds is None else f"{seconds:.2f}"
        print(f"| {name} | {questions} | {shown} |")
    if sandboxed:
        overhead = rows[0][2] - rows[1][2]
        print(
            "\nThe sandbox's own cost (bubblewrap -j 1 minus no sandbox -j 1): "
            f"{overhead:+.2f} s per submission."
        )


if __name__ == "__main__":
    main()
