"""Run notebooks headless with papermill, under the course's time and memory budget.

Each notebook runs in its own kernel, offline (see :mod:`om_teach.offline`), from its own
folder. Its memory is that of its own kernel's process tree (the kernel and whatever it starts:
a chain, a store, ten mines), never that of an earlier kernel still shutting down, measured as
Binder's container limit counts it: the working set of a cgroup made for the kernel where the
runner can make one (root, or a delegated cgroup v2), else the sum of the tree's PSS (shared
pages split between the processes that map them). The peak of that is the notebook's memory.
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
from jupyter_client.manager import AsyncKernelManager

from om_teach.offline import offline_env
from om_teach.syllabus import Syllabus
from om_teach.tree_limit import process_tree, tree_limit

MB = 1_000_000


class KernelMemory:
    """Samples the memory of one kernel's process tree every ``interval`` s, from the
    kernel's start; ``peak_mb`` is the largest sample, ``method`` says how it was measured."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self.cgroup = tree_limit(f"notebook-{os.getpid()}-{time.monotonic_ns()}",
                                 memory_mb=None, processes=None)  # fmt: skip
        self.method = "PSS" if self.cgroup.kind == "watchdog" else f"{self.cgroup.kind} working set"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wrap(self, command: list[str]) -> list[str]:
        return self.cgroup.wrap(command)

    def watch(self, pid: int) -> None:
        self._thread = threading.Thread(target=self._sample, args=(pid,), daemon=True)
        self._thread.start()

    def _sample(self, pid: int) -> None:
        try:
            kernel = psutil.Process(pid)
        except psutil.Error:
            return
        while True:
            total = self.cgroup.working_set_bytes()
            if total is None:
                total = _tree_pss(kernel)
            self.peak_mb = max(self.peak_mb, total / MB)
            if self._stop.wait(self.interval):
                return

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.cgroup.close()


def _tree_pss(root: psutil.Process) -> int:
    """The summed PSS of ``root`` and its descendants (RSS where PSS cannot be read)."""
    total = 0
    for process in process_tree(root):
        with suppress(psutil.Error):  # it ended between listing and reading
            info = process.memory_full_info()
            total += getattr(info, "pss", info.rss)
    return total


class MeasuredKernelManager(AsyncKernelManager):
    """A python3 kernel started in ``memory``'s cgroup (where there is one) and watched."""

    def __init__(self, *, memory: KernelMemory, **kw) -> None:
        super().__init__(kernel_name="python3", **kw)
        self.memory = memory

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        return self.memory.wrap(super().format_kernel_cmd(extra_arguments))

    async def _async_post_start_kernel(self, **kw) -> None:
        await super()._async_post_start_kernel(**kw)
        process = getattr(self.provisioner, "process", None)
        if process is not None:
            self.memory.watch(process.pid)


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
    memory = KernelMemory()
    with _environment(offline_env()):
        try:
            papermill.execute_notebook(
                str(path),
                str(output),
                parameters=parameters or {},
                cwd=str(path.parent),
                kernel_name="python3",
                km=MeasuredKernelManager(memory=memory),
                progress_bar=False,
                execution_timeout=int(2 * budget_seconds),
                allow_errors=allow_errors,
            )
        except Exception as err:  # a failing notebook is a result to report, not a crash
            error = f"failed: {type(err).__name__}: {str(err).strip().splitlines()[-1][:200]}"
        finally:
            memory.close()
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
