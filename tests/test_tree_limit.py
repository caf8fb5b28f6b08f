"""Limits on a submission's whole process tree: forked children share one memory limit.

The attack: a submission forks children that each stay under a per-process limit, and
together hold far more than the submission may. With no tree limit they all hold their
memory; with a cgroup (v2 or v1) or, where none can be made, the watchdog, they do not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from om_teach import tree_limit as tl

CHILDREN, EACH_MB, LIMIT_MB = 4, 150, 300

FORKER = f"""
import os, time
# Each child fills its memory, reports, and keeps it until the parent releases them all, so
# the children counted at the end held their memory at the same time.
release_r, release_w = os.pipe()
reports = []
for _ in range({CHILDREN}):
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(release_w)
        os.close(report_r)
        block = bytearray({EACH_MB} * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        os.write(report_w, b"h")
        os.read(release_r, 1)
        os._exit(0)
    os.close(report_w)
    reports.append((pid, report_r))
reported = [pid for pid, report_r in reports if os.read(report_r, 1) == b"h"]
time.sleep(0.2)  # a child the limit killed after it reported is reaped, not counted
print(sum(os.waitpid(pid, os.WNOHANG) == (0, 0) for pid in reported), flush=True)
os.close(release_w)
for pid, _ in reports:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
"""


FORK_MANY = """
import os, time
n = 0
try:
    for _ in range(50):
        if os.fork() == 0:
            time.sleep(2)
            os._exit(0)
        n += 1
except OSError:
    pass
print(n)
"""


def _name(what: str) -> str:
    """A cgroup name no other test run uses."""
    return f"test-{what}-{os.getpid()}-{time.monotonic_ns()}"


def _run(limit: tl.TreeLimit) -> tuple[int, str | None]:
    """How many children held their memory at once under ``limit`` (0 when the whole tree
    was killed), and why the limit stopped it."""
    with limit:
        process = subprocess.Popen(
            limit.wrap([sys.executable, "-c", FORKER]), stdout=subprocess.PIPE, text=True
        )
        limit.watch(process.pid)
        out, _ = process.communicate(timeout=60)
        reason = limit.stopped()
    return int(out.strip() or 0), reason


def _cgroup_or_skip() -> tl.TreeLimit:
    limit = tl.tree_limit(_name("probe"), memory_mb=LIMIT_MB, processes=64)
    if limit.kind == "watchdog":
        limit.close()
        pytest.skip("no cgroup can be made here (not root, no delegation)")
    return limit


def test_without_a_tree_limit_the_children_hold_it_all():
    """The attack, with the defence off: every child holds its memory (600 MB under 300)."""
    held, reason = _run(tl.TreeLimit("none", memory_mb=LIMIT_MB, processes=64))
    assert held == CHILDREN and reason is None


def test_a_cgroup_bounds_the_whole_tree():
    """In a cgroup the tree's memory is bounded: a child is killed, and the limit says why."""
    held, reason = _run(_cgroup_or_skip())
    assert held * EACH_MB <= LIMIT_MB
    assert reason is not None and f"passed {LIMIT_MB} MB" in reason


def test_the_watchdog_bounds_the_tree_without_a_cgroup():
    """Where no cgroup can be made, the watchdog sums the tree and kills it past the limit."""
    held, reason = _run(tl.TreeWatchdog("watchdog", memory_mb=LIMIT_MB, processes=64))
    assert held < CHILDREN
    assert reason is not None and f"passed {LIMIT_MB} MB" in reason


def test_a_cgroup_bounds_the_processes_of_the_tree():
    """pids.max bounds the tree's processes together, whatever their uid."""
    limit = tl.tree_limit(_name("pids"), memory_mb=1000, processes=8)
    if limit.kind == "watchdog":
        limit.close()
        pytest.skip("no cgroup can be made here")
    with limit:
        command = limit.wrap([sys.executable, "-c", FORK_MANY])
        out = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
        assert int(out) < 8 and "processes" in limit.stopped()


def test_a_closed_cgroup_is_removed():
    limit = _cgroup_or_skip()
    folders = list(getattr(limit, "folders", {}).values()) or [limit.folder]
    limit.close()
    assert not any(f.exists() for f in folders)


def test_available_names_the_limit_that_applies():
    assert tl.available().split(" (")[0] in ("cgroup v2", "cgroup v1", "watchdog")
