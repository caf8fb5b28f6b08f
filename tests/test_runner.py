"""The headless course runner: memory of the kernel's whole process tree, budgets, and the
`om-teach course run` command's table and exit status."""

from __future__ import annotations

import subprocess
import sys

from om_teach import runner
from om_teach.runner import KernelMemory, RunResult, format_table, run_notebook
from om_teach.tree_limit import TreeWatchdog

from .conftest import write_notebook


def _measure(command: list[str], memory: KernelMemory) -> KernelMemory:
    with subprocess.Popen(memory.wrap(command)) as process:
        memory.watch(process.pid)
        process.wait()
    memory.close()
    return memory


def test_kernel_memory_sees_a_grandchild():
    """A child that starts its own child holding ~200 MB is counted, grandchild included."""
    grandchild = "b = bytearray(200_000_000); import time; time.sleep(1.5)"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"
    memory = _measure([sys.executable, "-c", child], KernelMemory(interval=0.02))
    assert memory.peak_mb > 190


def test_kernel_memory_counts_its_own_tree_only():
    """A process still holding memory beside the kernel (an earlier kernel shutting down) is
    not counted: only the kernel's own tree is."""
    hold = "b = bytearray(300_000_000); import time; time.sleep(5)"
    earlier = subprocess.Popen([sys.executable, "-c", hold])
    try:
        memory = _measure([sys.executable, "-c", "import time; time.sleep(0.5)"], KernelMemory())
    finally:
        earlier.kill()
        earlier.wait()
    assert memory.peak_mb < 100


def test_kernel_memory_counts_shared_pages_once(monkeypatch):
    """Without a cgroup the tree's PSS is summed: a page that four forked children share is
    counted once in all, not four times (as a sum of RSS would)."""
    monkeypatch.setattr(runner, "tree_limit", TreeWatchdog)
    forks = (
        "import os, time\nb = bytearray(200_000_000)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
        "kids = [os.fork() for _ in range(3)]\ntime.sleep(1.5)\n"
        "[os.waitpid(k, 0) for k in kids if k]"
    )
    memory = _measure([sys.executable, "-c", forks], KernelMemory(interval=0.05))
    assert memory.method == "PSS"
    assert 190 < memory.peak_mb < 400, memory.peak_mb


def test_run_notebook_measures_and_passes(tmp_path):
    nb = write_notebook(tmp_path / "ok.ipynb", "x = seed + 1\nprint(x)")
    result = run_notebook(
        nb, tmp_path / "out" / "ok.ipynb", budget_seconds=60, budget_mb=1000, parameters={"seed": 4}
    )
    assert result.ok, result.problems
    assert 0 < result.seconds < 60 and 20 < result.peak_mb < 1000
    assert "5" in (tmp_path / "out" / "ok.ipynb").read_text()


def test_run_notebook_reports_a_failing_cell(tmp_path):
    nb = write_notebook(tmp_path / "bad.ipynb", "raise RuntimeError('broken on purpose')")
    result = run_notebook(nb, tmp_path / "out.ipynb", budget_seconds=60, budget_mb=1000)
    assert not result.ok
    assert "broken on purpose" in result.error


def test_over_budget_is_a_problem():
    r = RunResult("n.ipynb", seconds=61.0, peak_mb=1200, budget_seconds=60, budget_mb=1000)
    assert r.problems == [
        "took 61.0 s, over the 60 s budget",
        "peaked at 1200 MB, over the 1000 MB budget",
    ]
    table = format_table([r, RunResult("m.ipynb", 1.0, 100, 60, 1600)])
    assert "| m.ipynb | 1.0 | 100 | 60 s, 1600 MB | ok |" in table
    assert "over the 60 s budget" in table


def _course(tmp_path, source: str):
    """A one-module course in tmp_path whose notebook runs ``source``."""
    write_notebook(tmp_path / "notebooks" / "00_demo" / "00_demo.ipynb", source)
    (tmp_path / "course").mkdir()
    (tmp_path / "course" / "syllabus.toml").write_text(
        """version = "0"\ntitle = "t"\n
[budget]\nseconds = 60\nmemory_mb = 1000\nmultiprocess_memory_mb = 1600\ncores = 2\n
[[modules]]\nid = "00_demo"\ntitle = "Demo"\nuse_case = "x"\nstatus = "ready"
notebooks = ["notebooks/00_demo/00_demo.ipynb"]\nobjectives = ["a", "b", "c"]
minutes = 1\nexam = "final"\nmultiprocess = false\n
[[exams]]\nid = "final"\ntitle = "Final"\nstatus = "planned"\nfinal = true\n"""
    )
    return tmp_path / "course" / "syllabus.toml"


def _course_run(tmp_path, syllabus):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "om_teach.cli",
            "course",
            "run",
            "--syllabus",
            str(syllabus),
            "--out",
            str(tmp_path / "build"),
        ],
        capture_output=True,
        text=True,
    )


def test_course_run_prints_the_table(tmp_path):
    """`om-teach course run` executes into --out and prints seconds and peak memory."""
    result = _course_run(tmp_path, _course(tmp_path, "print('hello')"))
    assert result.returncode == 0, result.stderr
    assert "| notebooks/00_demo/00_demo.ipynb |" in result.stdout and "| ok |" in result.stdout
    assert (tmp_path / "build" / "00_demo" / "00_demo.ipynb").is_file()
    assert "course: 100%" in result.stderr  # the progress bar


def test_course_run_fails_naming_the_notebook(tmp_path):
    result = _course_run(tmp_path, _course(tmp_path, "1 / 0"))
    assert result.returncode == 1
    assert "FAILED notebooks/00_demo/00_demo.ipynb" in result.stderr
    assert "ZeroDivisionError" in result.stderr


def test_course_run_refuses_a_planned_module(root):
    result = subprocess.run(
        [sys.executable, "-m", "om_teach.cli", "course", "run", "12_lithium"],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert result.returncode == 2
    assert "planned, not ready" in result.stderr
