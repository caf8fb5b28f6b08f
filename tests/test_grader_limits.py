"""The grader's limits hold for a whole submission: its process tree, its output, its files.

Each test is an attack a submission can make: forked children that together pass the memory
limit, a cell that prints 400 MB at once or in 400,000 writes, and a peek at the run folder,
which holds the hidden inputs in its executed notebooks.
"""

from __future__ import annotations

import dataclasses
import json
import stat
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from om_teach.grading import grader
from om_teach.grading.key import AnswerKey
from om_teach.grading.sandbox import bubblewrap_version
from om_teach.grading.spec import load_exam
from om_teach.tree_limit import available

from .conftest import ROOT

TINY = ROOT / "tests" / "exams" / "tiny"
SECRET = b"instructor secret"
pytestmark = pytest.mark.skipif(bubblewrap_version() is None, reason="bubblewrap is not usable")

FORK_MEMORY = """
import os, time
children = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        block = bytearray(350 * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(1)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""


def _submission(tmp_path, name: str, *cells: str):
    """The right answer to the tiny exam, with ``cells`` run before its self-check."""
    nb = nbformat.read(TINY / "submissions" / "right.ipynb", as_version=4)
    nb.cells[0].source = f'student_id = "{name}"\nseed = 0'
    nb.cells[3:3] = [new_code_cell(source) for source in cells]
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def _exam(**limits):
    exam = load_exam(TINY)
    return dataclasses.replace(exam, limits=dataclasses.replace(exam.limits, **limits))


def test_forked_children_share_one_memory_limit_and_the_submission_is_graded(tmp_path):
    """Four children of 350 MB under memory_mb = 1000: the tree's cgroup stops them (it held
    1.4 GB with per-process limits only). The submission's own stop is graded, not retried:
    the question it answered keeps its point."""
    if available().startswith("watchdog"):
        pytest.skip("no cgroup can be made here")
    exam = _exam(memory_mb=1000, cell_seconds=30, total_seconds=60)
    path = _submission(tmp_path, "forker", FORK_MEMORY)
    (grade,) = grader.grade(
        exam, AnswerKey(exam, TINY / "key"), [(path, "forker")],
        out=tmp_path / "run", secret=SECRET, progress=False,
    )  # fmt: skip
    assert grade.status == "graded" and grade.points == {"q1_mean": 1.0}
    assert grade.stopped is not None and "passed 1000 MB" in grade.stopped
    feedback = (tmp_path / "run" / "feedback" / "forker.md").read_text()
    assert "passed 1000 MB" in feedback


def test_a_submission_that_kills_its_own_kernel_is_graded_not_retried(tmp_path):
    """A kernel killed by the submission's own code is the student's doing: graded as it
    stands (the question it never reached scores 0), not an error that forces a regrade."""
    exam = _exam()
    path = _submission(
        tmp_path, "quitter", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
    )
    (grade,) = grader.grade(
        exam, AnswerKey(exam, TINY / "key"), [(path, "quitter")],
        out=tmp_path / "run", secret=SECRET, progress=False,
    )  # fmt: skip
    assert grade.status == "graded" and grade.points == {"q1_mean": 0.0}


def test_the_run_folder_is_the_instructors_alone(tmp_path):
    """Executed notebooks hold the hidden inputs: folders 0700, files 0600."""
    exam = _exam()
    path = _submission(tmp_path, "alice")
    grader.grade(
        exam, AnswerKey(exam, TINY / "key"), [(path, "alice")],
        out=tmp_path / "run", secret=SECRET, progress=False,
    )  # fmt: skip
    run = tmp_path / "run"
    for folder in (run, run / "executed", run / "feedback"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for file in (run / "executed" / "alice.ipynb", run / "gradebook.sqlite", run / "grades.csv"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


WORKER = """
import json, resource, sys
from pathlib import Path
import nbformat
from om_teach.grading import grader
from om_teach.grading.sandbox import Limits

import papermill, om_teach.grading.output_cap  # what a worker imports before its first job
notebook, executed = sys.argv[1], Path(sys.argv[2])
limits = Limits(cell_seconds=60, total_seconds=90, memory_mb=3000, cpu_seconds=90)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run = grader.execute(Path(notebook).read_text(), {"seed": 0}, [], limits, True, executed)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"grown_mb": grown, "error": run.error}))
"""


@pytest.mark.parametrize(
    "flood",
    [
        "print('x' * (400 * 1024 * 1024))",  # one 400 MB write
        "import sys\nfor _ in range(400_000):\n    sys.stdout.write('y' * 1000 + '\\n')",
    ],
    ids=["one-400MB-write", "400000-small-writes"],
)
def test_a_flood_of_output_does_not_grow_the_worker(tmp_path, flood):
    """The worker keeps a bounded amount of output, marks the cut, and grows by < 200 MB."""
    path = _submission(tmp_path, "flood", flood)
    executed = tmp_path / "executed.ipynb"
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(path), str(executed)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    report = json.loads(out.splitlines()[-1])
    assert report["error"] is None
    assert report["grown_mb"] < 200, report
    assert executed.stat().st_size < 20 * 1024 * 1024
    text = executed.read_text()
    assert "output cut here" in text or "dropped" in text
