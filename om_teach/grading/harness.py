"""The cells the grader appends to a submission: they call the student's functions on the
hidden inputs inside the sandbox and write the results as plain JSON for judging outside.

The harness runs in the student's kernel, so it trusts nothing there: results pass through a
strict encoder that accepts only plain data (an int subclass whose ``__eq__`` lies is refused),
and whatever file comes back is parsed as untrusted JSON of bounded size. The student cannot
forge a passing result, since the expected values never enter the sandbox.
"""

from __future__ import annotations

import json
from pathlib import Path

from nbformat.v4 import new_code_cell

MAX_OUTPUT_BYTES = 10_000_000

_DEFINITION = """\
def __om_teach_harness(name, cases, path):
    import math

    def plain(value):
        kind = type(value)
        if value is None or kind in (bool, int, str):
            return value
        if kind is float:
            return value if math.isfinite(value) else repr(value)
        if kind in (list, tuple):
            return [plain(v) for v in value]
        if kind is dict and all(type(k) is str for k in value):
            return {k: plain(v) for k, v in value.items()}
        if kind.__module__ == "numpy" and hasattr(value, "tolist"):
            return plain(value.tolist())
        raise TypeError(f"an answer of type {kind.__qualname__} is not plain data")

    function = globals().get(name)
    results = []
    for args in cases:
        try:
            if not callable(function):
                raise NameError(f"{name} is not defined")
            results.append({"value": plain(function(*args))})
        except BaseException as err:  # a timeout arrives as KeyboardInterrupt
            results.append({"error": type(err).__name__})
            if isinstance(err, KeyboardInterrupt):
                break
    with open(path, "x", encoding="utf-8") as file:  # never into a file planted earlier
        file.write(__import__("json").dumps(results))
"""


def harness_cells(calls: list[tuple[str, str, list]], scratch: Path, nonce: str) -> list:
    """One cell defining the harness, then one cell per question ``(qid, function, cases)``,
    so that a question that hangs costs only its own cell."""
    cells = [new_code_cell(_DEFINITION, metadata={"om_teach": {"role": "harness"}})]
    for qid, function, cases in calls:
        payload = json.dumps(cases)
        path = str(output_path(scratch, nonce, qid))
        source = (
            f"__om_teach_harness({function!r}, __import__('json').loads({payload!r}), {path!r})"
        )
        cells.append(
            new_code_cell(source, metadata={"om_teach": {"role": "harness", "question": qid}})
        )
    return cells


def output_path(scratch: Path, nonce: str, qid: str) -> Path:
    """Where the harness writes one question's results."""
    return scratch / f"out-{nonce}-{qid}.json"


def read_results(path: Path) -> list[dict] | None:
    """The results a harness cell wrote, or None if it wrote nothing usable."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_OUTPUT_BYTES:
            return None
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        return None
    return results
