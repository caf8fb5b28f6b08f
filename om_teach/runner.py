"""Run notebooks headless with papermill, under the course's time and memory budget.

Each notebook runs in its own kernel, offline (see :mod:`om_teach.offline`), from its own
folder. While it runs, a thread samples the resident memory of every process descended from
this one: the kernel and whatever the kernel starts (a chain, a store, ten mines). The peak of
that sum is the notebook's memory.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from om_teach.offline import offline_env
from om_teach.syllabus import Syllabus

MB = 1_000_000


class TreeMemory:
    """Samples the summed RSS of this process's descendants; ``peak_mb`` is the largest sum.

    Use it as a context manager around the work to measure.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while True:
            total = 0
            for child in me.children(recursive=True):
                with suppress(psutil.Error):  # it ended between listing and reading
                    total += child.memory_info().rss
            self.peak_mb = max(self.peak_mb, total / MB)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class RunResult:
    """How one notebook's run went, against its budget."""

    notebook: str
    seconds: float
    peak_mb: float
    budget_seconds: float
    budget_mb: float
    error: str | None = None

    @property
    def problems(self) -> list[str]:
        """What went wrong: an error, or a budget overrun; empty when all is well."""
        problems = [self.error] if self.error else []
        if self.seconds > self.budget_seconds:
            problems.append(
                f"took {self.seconds:.1f} s, over the {self.budget_seconds:.0f} s budget"
            )
        if self.peak_mb > self.budget_mb:
            problems.append(
                f"peaked at {self.peak_mb:.0f} MB, over the {self.budget_mb:.0f} MB budget"
            )
        return problems

    @property
    def ok(self) -> bool:
        return not self.problems


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """Temporarily replace this process's environment, which kernels inherit."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_notebook(
    path: Path,
    output: Path,
    *,
    budget_seconds: float,
    budget_mb: float,
    parameters: dict | None = None,
    name: str | None = None,
    allow_errors: bool = False,
) -> RunResult:
    """Execute ``path`` into ``output`` with papermill, offline, and measure it.

    A cell may run at most twice the whole notebook's budget before it is stopped, so that a
    hung notebook fails instead of holding the run. With ``allow_errors`` every cell runs even
    after one fails (papermill still reports the failure).
    """
    import papermill  # slow to import (about 1 s): only when a notebook runs

    output.parent.mkdir(parents=True, exist_ok=True)
    error = None
    start = time.perf_counter()
    with _environment(offline_env()), TreeMemory() as memory:
        try:
            papermill.execute_notebook(
                str(path),
                str(output),
                parameters=parameters or {},
                cwd=str(path.parent),
                kernel_name="python3",
                progress_bar=False,
                execution_timeout=int(2 * budget_seconds),
                allow_errors=allow_errors,
            )
        except Exception as err:  # a failing notebook is a result to report, not a crash
            error = f"failed: {type(err).__name__}: {str(err).strip().splitlines()[-1][:200]}"
    return RunResult(
        notebook=name or str(path),
        seconds=time.perf_counter() - start,
        peak_mb=memory.peak_mb,
        budget_seconds=budget_seconds,
        budget_mb=budget_mb,
        error=error,
    )


def run_course(
    syllabus: Syllabus,
    modules: Sequence[str] = (),
    *,
    out_dir: Path,
    parameters: dict | None = None,
    progress: bool = True,
) -> list[RunResult]:
    """Run the ready notebooks of ``modules`` (all when empty) into ``out_dir``, in course order."""
    from tqdm.auto import tqdm

    for module_id in modules:
        if not syllabus.module(module_id).ready:  # also raises for an unknown id
            raise ValueError(f"module {module_id!r} is planned, not ready: it has no notebook yet")
    selected = [
        (module, path)
        for module, path in syllabus.notebook_paths()
        if not modules or module.id in modules
    ]
    results = []
    bar = tqdm(selected, desc="course", unit="notebook", disable=not progress)
    for module, path in bar:
        relative = path.relative_to(syllabus.root)
        bar.set_postfix_str(relative.name)
        results.append(
            run_notebook(
                path,
                out_dir / relative.relative_to("notebooks"),
                budget_seconds=syllabus.budget.seconds,
                budget_mb=syllabus.memory_budget_mb(module),
                parameters=parameters,
                name=str(relative),
            )
        )
    return results


def format_table(results: Sequence[RunResult]) -> str:
    """A markdown table of each notebook's seconds and peak memory against its budget."""
    rows = [
        "| notebook | seconds | peak MB | budget | status |",
        "|---|---:|---:|---|---|",
    ]
    for r in results:
        status = "ok" if r.ok else "; ".join(r.problems)
        rows.append(
            f"| {r.notebook} | {r.seconds:.1f} | {r.peak_mb:.0f} "
            f"| {r.budget_seconds:.0f} s, {r.budget_mb:.0f} MB | {status} |"
        )
    return "\n".join(rows)
