"""The om-teach command line: lab hands its options to JupyterLab at the start page."""

from __future__ import annotations

import os

import pytest

from om_teach import cli


def test_lab_opens_the_start_page_and_passes_options(monkeypatch, root):
    """`om-teach lab --no-browser` execs jupyter lab at the welcome notebook, from the repo root."""
    calls = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append(argv))
    monkeypatch.chdir(root / "notebooks")
    cli.main(["lab", "--no-browser", "--port", "8123"])
    (argv,) = calls
    assert argv[1:4] == ["-m", "jupyter", "lab"]
    assert cli.START_PAGE in argv and (root / cli.START_PAGE).is_file()
    assert argv[-3:] == ["--no-browser", "--port", "8123"]
    assert os.getcwd() == str(root)


def test_unknown_options_are_refused_outside_lab(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["course", "list", "--bogus"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
