"""``om-teach fl simulate``: a table of accuracy per round for each strategy, and clear errors
for settings that cannot run."""

from __future__ import annotations

import pytest

from om_teach import cli


@pytest.mark.parametrize("strategy", ["fedavg", "secagg"])
def test_simulate_prints_accuracy_per_round(strategy, capsys):
    argv = ["fl", "simulate", "--clients", "8", "--rounds", "2", "--strategy", strategy,
            "--learning-rate", "0.5"]  # fmt: skip
    assert cli.main(argv) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0].split() == ["round", "clients", "accuracy", "seconds"]
    assert [row.split()[:2] for row in rows[1:]] == [["1", "8"], ["2", "8"]]
    assert 0.5 < float(rows[-1].split()[2]) <= 1.0


def test_simulate_with_client_noise_reports_epsilon_against_each_party(capsys):
    argv = ["fl", "simulate", "--clients", "10", "--rounds", "1", "--strategy", "dp",
            "--noise-multiplier", "1", "--budget", "50", "--noise-at", "client"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "against readers of the model" in out and "against the server" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strategy", "dp"], "needs --noise-multiplier"),
        (["--strategy", "dp", "--noise-multiplier", "1"], "needs a budget"),
        (["--fraction", "1.5"], "sample rate must lie in (0, 1]"),
        (["--clients", "5000"], "more owners than rows"),
        (
            ["--strategy", "dp", "--noise-multiplier", "1", "--budget", "3"],
            "ask for fewer --rounds",
        ),
    ],
)
def test_bad_settings_get_a_message_not_a_traceback(extra, message, capsys):
    assert cli.main(["fl", "simulate", "--rounds", "2", "--clients", "4", *extra]) == 2
    assert message in capsys.readouterr().err
