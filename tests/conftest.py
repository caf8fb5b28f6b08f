"""Shared fixtures: the repository root, and small notebooks and syllabi made on the fly."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent


def write_notebook(path: Path, *sources: str, parameters: str = "seed = 0") -> Path:
    """Write a notebook whose first code cell is a tagged ``parameters`` cell."""
    cells = [new_code_cell(parameters, metadata={"tags": ["parameters"]})]
    cells += [new_code_cell(source) for source in sources]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def root() -> Path:
    return ROOT
