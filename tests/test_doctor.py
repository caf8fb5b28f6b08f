"""``om-teach doctor``: one line per check, a fix for every cross, and a healthy course venv."""

from __future__ import annotations

from pathlib import Path

import pytest

from om_teach import doctor


def test_report_has_one_line_per_check(tmp_path: Path) -> None:
    """Each check gets its own line, starting with a tick or a cross and its name."""
    checks = doctor.run_checks(tmp_path)
    lines = doctor.report(checks).splitlines()
    assert len(lines) == len(checks)
    for check, line in zip(checks, lines, strict=True):
        assert line.startswith(f"{'✓' if check.ok else '✗'} {check.name} ")


def test_a_missing_program_gets_a_cross_and_its_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing on PATH, bwrap, node and npm fail, each with the command that installs it."""
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    checks = {check.name: check for check in doctor.run_checks(tmp_path)}
    report = doctor.report(list(checks.values()))
    for name, fix in [
        ("bwrap", "apt-get install bubblewrap"),
        ("node", "apt-get install nodejs"),
        ("npm", "apt-get install npm"),
    ]:
        assert not checks[name].ok and checks[name].fix == fix
        assert f"✗ {name} " in report and fix in report


def test_node_tools_are_found_in_node_modules(tmp_path: Path) -> None:
    """anvil and jsipfs are optional; each is found in the root's node_modules/.bin."""
    absent = {check.name: check for check in doctor.run_checks(tmp_path)}
    assert not absent["anvil"].ok and absent["anvil"].fix.endswith("@foundry-rs/anvil")
    assert not absent["anvil"].required and not absent["jsipfs"].required
    bin_dir = tmp_path / "node_modules" / ".bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "anvil").touch()
    present = {check.name: check for check in doctor.run_checks(tmp_path)}
    assert present["anvil"].ok and present["anvil"].fix is None


def test_a_wrong_torch_series_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch outside 2.13.x is a required failure whose fix installs the pinned CPU build."""
    monkeypatch.setattr(doctor, "version", lambda name: "2.12.1+cu126")
    monkeypatch.setattr(doctor.sys, "platform", "linux")
    check = doctor._torch()
    assert not check.ok and check.required
    assert "cu126 build" in check.detail
    assert check.fix is not None and "torch==2.13.0+cpu" in check.fix


def test_this_environment_passes_the_required_checks() -> None:
    """The venv the tests run in has everything the course requires."""
    failed = [check for check in doctor.run_checks() if check.required and not check.ok]
    assert not failed, doctor.report(failed)


def test_doctor_says_which_limit_bounds_a_submission(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cgroup where one can be made; else the watchdog, with a cross and how to get one."""
    from om_teach import tree_limit

    check = next(c for c in doctor.run_checks() if c.name == "grader limits")
    assert check.detail.startswith(("cgroup v2", "cgroup v1", "watchdog"))
    monkeypatch.setattr(tree_limit, "tree_limit", tree_limit.TreeWatchdog)
    check = next(c for c in doctor.run_checks() if c.name == "grader limits")
    assert not check.ok and check.detail.startswith("watchdog") and "cgroup" in check.fix
