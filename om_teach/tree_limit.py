"""Memory and process limits for a submission's whole process tree, not for each process.

``prlimit`` bounds each process alone: four forked children under ``--as=1000 MB`` held
2.8 GB together. A cgroup bounds them all. The grader puts each submission's sandbox in a
cgroup of its own: cgroup v2 where the memory and pids controllers are delegated to this
process's cgroup, else cgroup v1 (memory and pids hierarchies), which root can write. Where no
cgroup can be made (not root, no delegation), a watchdog thread sums the tree's resident memory
every 50 ms and kills the whole tree when it passes the limit: coarser (a fast allocation can
overshoot between two looks), but the tree stays bounded. ``prlimit --as`` stays as a second
wall in every case.

A tree stopped by its own limit is the submission's doing, and is graded as it stands:
:meth:`TreeLimit.stopped` says why it stopped, so that the grader does not retry it. With no
limits (``None``), a cgroup only measures: the course runner reads a notebook's working set
(:meth:`TreeLimit.working_set_bytes`) from it, as Binder's container limit counts memory.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import threading
import time
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT_NAME = "om-teach-grading"
POLL_SECONDS = 0.05


class TreeLimit:
    """A limit on ``memory_mb`` and ``processes`` for one process tree; use as a context
    manager around the run, :meth:`wrap` the command, then :meth:`watch` the started PID."""

    kind = "none"

    def __init__(self, name: str, *, memory_mb: int | None, processes: int | None) -> None:
        self.name, self.memory_mb, self.processes = name, memory_mb, processes

    def wrap(self, command: list[str]) -> list[str]:
        """``command``, started inside the limit."""
        return command

    def watch(self, pid: int) -> None:
        """Start enforcing on the tree under ``pid`` (only the watchdog needs it)."""

    def stopped(self) -> str | None:
        """Why the limit stopped the tree (its memory or its processes), or None."""
        return None

    def working_set_bytes(self) -> int | None:
        """The tree's memory now, as a container limit counts it (usage less inactive file
        cache), where a cgroup can tell; None where it cannot."""
        return None

    def close(self) -> None:
        """Release the limit (after the tree is gone)."""

    def __enter__(self) -> TreeLimit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write(path: Path, value: str | int) -> None:
    path.write_text(f"{value}\n")


def _own_cgroup(controller: str) -> str | None:
    """This process's cgroup path for ``controller`` (v1), or for v2 when ``controller`` is ""."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") if controller else controllers == "":
            return path
    return None


class CgroupV1Limit(TreeLimit):
    """A child cgroup in the v1 memory and pids hierarchies, under this process's own."""

    kind = "cgroup v1"

    def __init__(self, name: str, *, memory_mb: int | None, processes: int | None) -> None:
        super().__init__(name, memory_mb=memory_mb, processes=processes)
        self.folders: dict[str, Path] = {}
        try:
            for controller in ("memory", "pids"):
                folder = _v1_parent(controller) / name
                folder.mkdir(mode=0o700)
                self.folders[controller] = folder
            memory = self.folders["memory"]
            if memory_mb is not None:
                _write(memory / "memory.limit_in_bytes", memory_mb * 1024 * 1024)
                if (memory / "memory.memsw.limit_in_bytes").exists():  # no way around by swap
                    _write(memory / "memory.memsw.limit_in_bytes", memory_mb * 1024 * 1024)
            if processes is not None:
                _write(self.folders["pids"] / "pids.max", processes)
        except OSError:
            self.close()
            raise

    def wrap(self, command: list[str]) -> list[str]:
        procs = " ".join(shlex.quote(str(f / "cgroup.procs")) for f in self.folders.values())
        join = f'for f in {procs}; do echo $$ > $f || exit 125; done; exec "$@"'
        return ["/bin/sh", "-c", join, "om-teach-cgroup", *command]

    def stopped(self) -> str | None:
        memory, pids = self.folders.get("memory"), self.folders.get("pids")
        if memory is not None and _field(memory / "memory.oom_control", "oom_kill") > 0:
            return _memory_reason(self.memory_mb)
        if pids is not None and _field(pids / "pids.events", "max") > 0:
            return f"it tried to run more than {self.processes} processes at once"
        return None

    def working_set_bytes(self) -> int | None:
        memory = self.folders.get("memory")
        if memory is None:
            return None
        usage = _number(memory / "memory.usage_in_bytes")
        return _working_set(usage, _field(memory / "memory.stat", "total_inactive_file"))

    def close(self) -> None:
        for folder in self.folders.values():
            _remove_cgroup(folder)
        self.folders = {}


class CgroupV2Limit(TreeLimit):
    """A child cgroup of this process's own in the unified hierarchy, where memory and pids
    are delegated to it."""

    kind = "cgroup v2"

    def __init__(self, name: str, *, memory_mb: int | None, processes: int | None) -> None:
        super().__init__(name, memory_mb=memory_mb, processes=processes)
        self.folder: Path | None = None
        folder = _v2_parent() / name
        folder.mkdir(mode=0o700)
        self.folder = folder
        try:
            if memory_mb is not None:
                _write(folder / "memory.max", memory_mb * 1024 * 1024)
                if (folder / "memory.swap.max").exists():
                    _write(folder / "memory.swap.max", 0)
            if processes is not None:
                _write(folder / "pids.max", processes)
        except OSError:
            self.close()
            raise

    def wrap(self, command: list[str]) -> list[str]:
        procs = shlex.quote(str(self.folder / "cgroup.procs"))
        join = f'echo $$ > {procs} || exit 125; exec "$@"'
        return ["/bin/sh", "-c", join, "om-teach-cgroup", *command]

    def stopped(self) -> str | None:
        if self.folder is None:
            return None
        if _field(self.folder / "memory.events", "oom_kill") > 0:
            return _memory_reason(self.memory_mb)
        if _field(self.folder / "pids.events", "max") > 0:
            return f"it tried to run more than {self.processes} processes at once"
        return None

    def working_set_bytes(self) -> int | None:
        if self.folder is None:
            return None
        usage = _number(self.folder / "memory.current")
        return _working_set(usage, _field(self.folder / "memory.stat", "inactive_file"))

    def close(self) -> None:
        if self.folder is not None:
            _remove_cgroup(self.folder)
            self.folder = None


class TreeWatchdog(TreeLimit):
    """Where no cgroup can be made: a thread sums the tree's resident memory and kills the
    whole tree when it passes the limit. Processes stay bounded by ``prlimit --nproc``."""

    kind = "watchdog"

    def __init__(self, name: str, *, memory_mb: int | None, processes: int | None) -> None:
        super().__init__(name, memory_mb=memory_mb, processes=processes)
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._reason: str | None = None

    def watch(self, pid: int) -> None:
        self._thread = threading.Thread(target=self._run, args=(pid,), daemon=True)
        self._thread.start()

    def _run(self, pid: int) -> None:
        try:
            root = psutil.Process(pid)
        except psutil.Error:
            return
        while not self._done.wait(POLL_SECONDS):
            tree = process_tree(root)
            if not tree:
                return
            if self.memory_mb is not None and sum(_rss(p) for p in tree) > self.memory_mb * 2**20:
                self._reason = _memory_reason(self.memory_mb)
                for process in tree:
                    with contextlib.suppress(psutil.Error):
                        process.kill()
                return

    def stopped(self) -> str | None:
        return self._reason

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()


def _memory_reason(memory_mb: int) -> str:
    return f"its memory passed {memory_mb} MB (the whole submission's limit)"


def process_tree(root: psutil.Process) -> list[psutil.Process]:
    """``root`` and its descendants; empty once ``root`` is gone."""
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def _number(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _working_set(usage: int | None, inactive_file: int) -> int | None:
    return None if usage is None else max(usage - inactive_file, 0)


def _field(path: Path, name: str) -> int:
    """The number after ``name`` in a flat-keyed cgroup file (0 when absent)."""
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _v1_parent(controller: str) -> Path:
    """``om-teach-grading`` under this process's cgroup in the v1 ``controller`` hierarchy."""
    mount = CGROUP_ROOT / controller
    own = _own_cgroup(controller)
    if own is None or not (mount / "cgroup.procs").exists():
        raise OSError(f"no cgroup v1 {controller} hierarchy at {mount}")
    parent = mount / own.lstrip("/") / PARENT_NAME
    parent.mkdir(exist_ok=True)
    return parent


def _v2_parent() -> Path:
    """This process's cgroup in the unified hierarchy, when memory and pids are delegated."""
    unified = (CGROUP_ROOT / "cgroup.controllers").exists()
    mount = CGROUP_ROOT if unified else CGROUP_ROOT / "unified"
    own = _own_cgroup("")
    if own is None or not (mount / "cgroup.controllers").exists():
        raise OSError("no cgroup v2 hierarchy")
    parent = mount / own.lstrip("/")
    enabled = (parent / "cgroup.subtree_control").read_text().split()
    if not {"memory", "pids"} <= set(enabled):
        raise OSError(f"memory and pids are not delegated to {parent} (cgroup v2)")
    return parent


def _remove_cgroup(folder: Path) -> None:
    """Remove ``folder`` once its processes are gone (they may take a moment to be reaped)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            for pid in _pids(folder):
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)
            time.sleep(POLL_SECONDS)


def _pids(folder: Path) -> list[int]:
    try:
        return [int(p) for p in (folder / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def tree_limit(name: str, *, memory_mb: int | None, processes: int | None) -> TreeLimit:
    """The strongest limit this machine allows: cgroup v2, cgroup v1, else the watchdog."""
    for kind in (CgroupV2Limit, CgroupV1Limit):
        try:
            return kind(name, memory_mb=memory_mb, processes=processes)
        except OSError:
            continue
    return TreeWatchdog(name, memory_mb=memory_mb, processes=processes)


def available() -> str:
    """Which limit a submission's tree gets here, in words (for the doctor and the README)."""
    probe = f"probe-{os.getpid()}-{time.monotonic_ns()}"
    with tree_limit(probe, memory_mb=64, processes=8) as limit:
        kind = limit.kind
    if kind == "watchdog":
        return "watchdog (no cgroup here: the tree's memory is summed and killed past the limit)"
    return f"{kind} (memory and processes of the whole tree)"
