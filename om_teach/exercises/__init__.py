"""Self-checks for the module notebooks: ``check("module.exercise", answer)``.

Each exercise has a judge that tests the student's answer (usually a function) on inputs of
its own making and returns None for a pass or a hint for a failure. A judge never prints the
expected value, so the check teaches without giving the solution away. Judges live in one
module per course module (``om_teach.exercises.welcome`` for ``welcome.*``) and register
themselves with :func:`exercise`. Reference answers live in the tests, not here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

Judge = Callable[[Any], str | None]

_JUDGES: dict[str, Judge] = {}
_MODULES = {
    "welcome": "om_teach.exercises.welcome",
    "toolbox": "om_teach.exercises.toolbox",
    "hydrogen": "om_teach.exercises.hydrogen",
    "helium": "om_teach.exercises.helium",
    "federated": "om_teach.exercises.federated",
    "hosting": "om_teach.exercises.hosting",
}


def exercise(exercise_id: str) -> Callable[[Judge], Judge]:
    """Register a judge under ``exercise_id`` (``"module.name"``)."""

    def register(judge: Judge) -> Judge:
        if exercise_id in _JUDGES:
            raise ValueError(f"exercise {exercise_id!r} is registered twice")
        _JUDGES[exercise_id] = judge
        return judge

    return register


def judge_for(exercise_id: str) -> Judge:
    """The judge of ``exercise_id``; raises KeyError naming the known exercises."""
    module = _MODULES.get(exercise_id.partition(".")[0])
    if module is not None:
        importlib.import_module(module)
    if exercise_id not in _JUDGES:
        known = ", ".join(sorted(_JUDGES)) or "none loaded"
        raise KeyError(f"no exercise {exercise_id!r}; known exercises: {known}")
    return _JUDGES[exercise_id]


def check(exercise_id: str, answer: Any) -> bool:
    """Judge ``answer`` to ``exercise_id``: print a pass or a hint, and return whether it passed.

    An answer that raises is a failure with a hint, never a crash of the notebook.
    """
    judge = judge_for(exercise_id)
    try:
        hint = judge(answer)
    except NotImplementedError:
        hint = "not answered yet: replace the `raise NotImplementedError` with your code."
    except Exception as err:  # the student's code failed: report it as a hint
        hint = f"your answer raised {type(err).__name__}: {err}"
    if hint is None:
        print(f"✓ {exercise_id}: correct.")
        return True
    print(f"✗ {exercise_id}: not yet. Hint: {hint}")
    return False
