"""The om-teach command line: lab hands its options to JupyterLab at the start page; the
README's grading command lines still reach their commands."""

from __future__ import annotations

import os

import pytest

from om_teach import cli
from om_teach.grading import cli as grading_cli


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


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (
            "grade exams/toolbox --roster roster.csv --key key --out run1 -j 2 --regrade",
            "_grade",
        ),
        ("certify init-key --path /tmp/k.pem --force", "_init_key"),
        ("certify --gradebook run1/gradebook.sqlite --exam exams/toolbox --out certs", "_certify"),
        ("certify clear alice --reason ok --gradebook g.sqlite --exam exams/toolbox", "_clear"),
        ("verify certificates/alice.json --public-key signing-key.pub", "_verify"),
    ],
)
def test_grading_command_lines_reach_their_commands(argv, command):
    """grade, certify (init-key, clear) and verify parse as the README writes them."""
    args = cli.build_parser().parse_args(argv.split())
    assert args.func is getattr(grading_cli, command)
