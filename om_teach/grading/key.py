"""The answer key: hidden inputs and reference answers, loaded from an instructor's folder
(``--key DIR``, holding ``checks.py``) in the grader's own process, never in the sandbox.

For each question ``q`` the key defines ``cases_q(rng)`` (the hidden inputs, as lists of
JSON-safe arguments, drawn from the student's seed) and ``reference_q(*args)``; optionally
``judge_q(args, output) -> bool`` where equality is the wrong test (randomized ciphertexts),
and ``TOLERANCE = {q: relative tolerance}`` for float answers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from om_teach.grading.spec import Exam, ExamError


def key_sha256(folder: Path) -> str:
    """A hash of every file in the key folder (names and contents): it changes with the key."""
    digest = hashlib.sha256()
    for path in sorted(
        p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    ):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class AnswerKey:
    """The hidden checks of one exam."""

    def __init__(self, exam: Exam, folder: str | Path) -> None:
        self.folder = Path(folder)
        checks = self.folder / "checks.py"
        if not checks.is_file():
            raise ExamError(f"{checks}: no such file (is {self.folder} an answer key?)")
        spec = importlib.util.spec_from_file_location(f"om_teach_key_{exam.id}", checks)
        module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for q in exam.questions:
            for prefix in ("cases_", "reference_"):
                if not callable(getattr(module, prefix + q.id, None)):
                    raise ExamError(f"{checks}: defines no {prefix}{q.id}")
        self.exam, self.module = exam, module
        self.tolerance: dict[str, float] = getattr(module, "TOLERANCE", {})
        self.sha256 = key_sha256(self.folder)

    def cases(self, qid: str, seed: int) -> list[list]:
        """The hidden inputs of question ``qid`` for the student with ``seed``, as plain JSON."""
        index = [q.id for q in self.exam.questions].index(qid)
        rng = np.random.default_rng([seed, index])
        return json.loads(json.dumps(getattr(self.module, f"cases_{qid}")(rng)))

    def correct(self, qid: str, cases: list[list], results: list[dict] | None) -> bool:
        """Whether the student's results are right on every hidden case."""
        if results is None or len(results) != len(cases):
            return False
        judge = getattr(self.module, f"judge_{qid}", None)
        reference = getattr(self.module, f"reference_{qid}")
        tolerance = self.tolerance.get(qid, 0.0)
        for args, result in zip(cases, results, strict=True):
            if set(result) != {"value"}:
                return False
            if judge is not None:
                if not judge(args, result["value"]):
                    return False
            elif not same(result["value"], _plain(reference(*args)), tolerance):
                return False
        return True


def _plain(value: Any) -> Any:
    """The reference's answer in the form the student's travels in: plain JSON."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist()))


def same(got: Any, want: Any, tolerance: float = 0.0) -> bool:
    """Plain-JSON equality, with a relative (and as small absolute) tolerance for floats."""
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        if isinstance(want, int) and isinstance(got, int):
            return got == want
        return math.isclose(got, want, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(
            same(g, w, tolerance) for g, w in zip(got, want, strict=True)
        )
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(same(got[k], want[k], tolerance) for k in want)
    return type(got) is type(want) and got == want
