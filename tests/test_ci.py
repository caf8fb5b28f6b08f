"""Under CI nothing is skipped silently: a test that would skip fails the run instead."""

from __future__ import annotations

import pytest

from .conftest import ROOT

pytest_plugins = ["pytester"]

SKIPS = """
import shutil

import pytest


def test_skips_inside():
    pytest.skip("anvil is not installed")


@pytest.mark.skipif(shutil.which("no-such-tool") is None, reason="bubblewrap is not usable")
def test_skipped_by_mark():
    pass


@pytest.mark.xfail(reason="a known failure, not a skip")
def test_expected_failure():
    assert False
"""


@pytest.mark.parametrize("ci", ["true"])
def test_a_skip_fails_under_ci(pytester, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile(SKIPS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, errors=1, xfailed=1)  # a skip in setup is an error
    result.stdout.fnmatch_lines(["*skipped under CI*anvil is not installed*"])


@pytest.mark.parametrize("ci", [None, "false"])
def test_a_skip_is_a_skip_elsewhere(pytester, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile(SKIPS)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(skipped=2, xfailed=1)


def test_ci_run_sets_ci_and_calls_the_readme_command():
    script = (ROOT / ".ci" / "run").read_text()
    assert "export CI=true" in script and "make test" in script
    assert "make test" in (ROOT / "README.md").read_text()
