"""Every self-check a notebook uses passes its reference answer and fails wrong ones, and
never prints the solution."""

from __future__ import annotations

import importlib
import re

import nbformat
import pytest

from om_teach.exercises import check, exercise, judge_for

from .conftest import ROOT


def _answers() -> tuple[dict, dict]:
    """Reference and wrong answers from tests/exercise_answers*.py (one file per module group)."""
    reference, wrong = {}, {}
    for path in sorted((ROOT / "tests").glob("exercise_answers*.py")):
        module = importlib.import_module(f"tests.{path.stem}")
        reference.update(module.REFERENCE)
        wrong.update(module.WRONG)
    return reference, wrong


REFERENCE, WRONG = _answers()


def _used_ids() -> set[str]:
    ids = set()
    for path in (ROOT / "notebooks").rglob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                ids |= set(re.findall(r"""check\(\s*["']([\w.]+)["']""", cell.source))
    return ids


USED = sorted(_used_ids())


def test_notebooks_use_exercises():
    assert "welcome.candidates" in USED and "welcome.smallest_class" in USED


def test_every_used_exercise_has_a_reference_and_a_wrong_answer():
    for exercise_id in USED:
        assert exercise_id in REFERENCE, f"no reference answer for {exercise_id}"
        assert WRONG.get(exercise_id), f"no wrong answer for {exercise_id}"


@pytest.mark.parametrize("exercise_id", USED)
def test_reference_answer_passes(exercise_id, capsys):
    assert check(exercise_id, REFERENCE[exercise_id]) is True
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("exercise_id", "answer"),
    [(i, a) for i in USED for a in WRONG.get(i, [])],
)
def test_wrong_answer_fails_with_a_hint(exercise_id, answer, capsys):
    assert check(exercise_id, answer) is False
    out = capsys.readouterr().out
    assert "✗" in out and "Hint:" in out


def test_unanswered_exercise_says_so(capsys):
    def unanswered(*args):
        raise NotImplementedError

    assert check("welcome.smallest_class", unanswered) is False
    assert "not answered yet" in capsys.readouterr().out


def test_crashing_answer_is_a_hint_not_a_crash(capsys):
    assert check("welcome.smallest_class", lambda t, q: 1 / 0) is False
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_hints_never_contain_the_reference_code(capsys):
    """The printed feedback for every wrong answer shares no line with the reference source."""
    import inspect

    for exercise_id in USED:
        reference_lines = {
            line.strip()
            for line in inspect.getsource(REFERENCE[exercise_id]).splitlines()[1:]
            if line.strip()
        }
        for answer in WRONG[exercise_id]:
            check(exercise_id, answer)
            out = capsys.readouterr().out
            assert not any(line in out for line in reference_lines)


def test_unknown_exercise_names_the_known_ones():
    with pytest.raises(KeyError, match=r"welcome\.candidates"):
        judge_for("welcome.nope")


def test_an_exercise_id_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="registered twice"):
        exercise("welcome.candidates")(lambda answer: None)
