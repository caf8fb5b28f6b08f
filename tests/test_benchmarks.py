"""Every benchmark script runs in its quick form and prints a markdown table, so none rots."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT

SCRIPTS = sorted((ROOT / "benchmarks").glob("bench_*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_benchmark_runs_quick(script):
    out = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.lstrip().startswith("## ")
    assert "|---" in out.stdout or "| ---" in out.stdout
