"""Every course notebook follows the conventions: stripped, python3, parameters first,
objectives as in the syllabus, offline, and the same numbers for the same seed."""

from __future__ import annotations

import re

import nbformat
import pytest

from om_teach import syllabus
from om_teach.runner import run_notebook

from .conftest import ROOT, write_notebook

COURSE = syllabus.load()
NOTEBOOKS = [(module, path) for module, path in COURSE.notebook_paths()]
IDS = [str(path.relative_to(ROOT)) for _, path in NOTEBOOKS]


def _read(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return nb


@pytest.mark.parametrize(("module", "path"), NOTEBOOKS, ids=IDS)
def test_outputs_are_stripped_and_kernel_is_python3(module, path):
    """Stored notebooks carry no outputs or execution counts, and name the python3 kernel."""
    nb = _read(path)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.metadata["kernelspec"]["language"] == "python"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.parametrize(("module", "path"), NOTEBOOKS, ids=IDS)
def test_first_code_cell_is_tagged_parameters_with_a_seed(module, path):
    """Papermill injects parameters after the first code cell, tagged `parameters`."""
    code = [c for c in _read(path).cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert re.search(r"^seed\s*=", code[0].source, re.MULTILINE)
    assert not any("parameters" in c.metadata.get("tags", []) for c in code[1:])


@pytest.mark.parametrize(("module", "path"), NOTEBOOKS, ids=IDS)
def test_objectives_match_the_syllabus(module, path):
    """A module notebook lists its syllabus objectives verbatim, under `## Objectives`."""
    text = "\n".join(c.source for c in _read(path).cells if c.cell_type == "markdown")
    assert "## Objectives" in text
    for objective in module.objectives:
        assert f"- {objective}" in text


FRESH = "fresh-randomness"


def _outputs(nb) -> list[str]:
    """The text a reader sees: printed text and results, not images or timings, nor the
    output of cells tagged `fresh-randomness` (keys and noise that must not follow the seed)."""
    seen = []
    for cell in nb.cells:
        if FRESH in cell.metadata.get("tags", []):
            continue
        outputs = cell.get("outputs", [])
        seen.append("".join(o.text for o in outputs if o.get("name") == "stdout"))
        for out in outputs:
            if out.output_type == "execute_result":
                seen.append(out.data.get("text/plain", ""))
            elif out.output_type == "error":
                seen.append(f"{out.ename}: {out.evalue}")
    return seen


@pytest.mark.parametrize(("module", "path"), NOTEBOOKS, ids=IDS)
def test_same_seed_gives_the_same_numbers(module, path, tmp_path):
    """Two offline runs with the same seed print the same results."""
    runs = []
    for i in range(2):
        result = run_notebook(
            path,
            tmp_path / f"run{i}.ipynb",
            budget_seconds=COURSE.budget.seconds,
            budget_mb=COURSE.memory_budget_mb(module),
            parameters={"seed": 3},
        )
        assert result.error is None, result.error
        runs.append(_outputs(nbformat.read(tmp_path / f"run{i}.ipynb", as_version=4)))
    assert runs[0] == runs[1]
    assert any(runs[0]), "the notebook printed nothing to compare"


@pytest.mark.parametrize(("module", "path"), NOTEBOOKS, ids=IDS)
def test_few_cells_are_exempt_from_the_seed(module, path):
    """Cells tagged `fresh-randomness` are the exception: fewer than half the code cells, and
    the notebook says why they change."""
    nb = _read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    fresh = [c for c in code if FRESH in c.metadata.get("tags", [])]
    assert len(fresh) < len(code) / 2
    if fresh:
        assert any(FRESH in c.source for c in nb.cells if c.cell_type == "markdown")


def test_a_notebook_that_reaches_the_internet_fails(tmp_path):
    """Notebooks run offline: a download is refused inside the kernel, and the run fails."""
    nb = write_notebook(
        tmp_path / "net.ipynb",
        "import urllib.request\nurllib.request.urlopen('https://pypi.org/simple/', timeout=5)",
    )
    result = run_notebook(nb, tmp_path / "out.ipynb", budget_seconds=60, budget_mb=1000)
    assert result.error is not None
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "offline guard" in "".join(_outputs(out))


def test_a_notebook_may_use_loopback(tmp_path):
    """Local servers (a chain, a store) stay reachable under the offline guard."""
    nb = write_notebook(
        tmp_path / "loop.ipynb",
        "import socket\nserver = socket.create_server(('127.0.0.1', 0))\n"
        "client = socket.create_connection(server.getsockname())\nprint('connected')",
    )
    result = run_notebook(nb, tmp_path / "out.ipynb", budget_seconds=60, budget_mb=1000)
    assert result.error is None, result.error
