"""Binder builds the course from binder/ alone: these tests keep that folder in step with the
package, check that repo2docker accepts it, and rebuild its environment in a fresh venv."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT, write_notebook

BINDER = ROOT / "binder"
REQUIREMENTS = BINDER / "requirements.txt"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
WELCOME = "notebooks/00_welcome/00_welcome.ipynb"


def _lines(path: Path) -> list[str]:
    """The lines of a pip requirements file, without comments and blank lines."""
    lines = (re.sub(r"(^|\s)#.*", "", line).strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _requirements(path: Path) -> dict[str, Requirement]:
    """The requirements of a pip requirements file by canonical name; option lines are skipped."""
    reqs = (Requirement(line) for line in _lines(path) if not line.startswith("-"))
    return {canonicalize_name(req.name): req for req in reqs}


def _pin(req: Requirement) -> Version | None:
    """The version a requirement pins with ``==``, if it does."""
    pins = [Version(spec.version) for spec in req.specifier if spec.operator == "=="]
    return pins[0] if pins else None


def _constraints_file() -> Path:
    """The constraints file that binder/requirements.txt names (pip reads it relative to it)."""
    options = [line.split(maxsplit=1) for line in _lines(REQUIREMENTS)]
    paths = [parts[1] for parts in options if parts[0] in ("-c", "--constraint")]
    assert len(paths) == 1, f"expected one -c line in {REQUIREMENTS}, found {paths}"
    return (REQUIREMENTS.parent / paths[0]).resolve()


def _run(command: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output for the assertion messages."""
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False, **kwargs
    )


def _tail(result: subprocess.CompletedProcess[str], chars: int = 4000) -> str:
    """The end of a command's output, to explain a failure."""
    return f"exit {result.returncode}\n{(result.stdout + result.stderr)[-chars:]}"


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """What a commit would hold: the tracked and untracked-but-not-ignored files, so no .venv."""
    listing = _run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT
    )
    assert listing.returncode == 0, _tail(listing)
    copy = tmp_path / "repo"
    for name in filter(None, listing.stdout.split("\0")):
        if (ROOT / name).is_file():  # listed but deleted in the working tree
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    return copy


def test_torch_comes_from_the_cpu_index() -> None:
    """Binder installs the CPU-only torch; plain `torch` would pull gigabytes of CUDA wheels."""
    lines = _lines(REQUIREMENTS)
    assert f"--extra-index-url {CPU_INDEX}" in lines, lines
    reqs = [line for line in lines if not line.startswith("-")]
    torch_lines = [line for line in reqs if canonicalize_name(Requirement(line).name) == "torch"]
    assert len(torch_lines) == 1, torch_lines
    pin = _pin(Requirement(torch_lines[0]))
    assert pin is not None and pin.local == "cpu", f"want torch==X+cpu, got {torch_lines[0]!r}"
    constrained = _pin(_requirements(_constraints_file())["torch"])
    assert constrained is not None and pin.public == constrained.public, (pin, constrained)


def test_binder_covers_every_runtime_dependency() -> None:
    """Each runtime dependency is in binder/requirements.txt, pinned (there or by its constraints)
    to a version that meets pyproject.toml; anything extra carries its own pin."""
    binder = _requirements(REQUIREMENTS)
    constraints = _requirements(_constraints_file())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = {
        canonicalize_name(r.name): r for r in map(Requirement, pyproject["project"]["dependencies"])
    }
    problems = []
    for name, dep in runtime.items():
        if name not in binder:
            problems.append(f"{name}: missing from {REQUIREMENTS.name}")
            continue
        pin = _pin(binder[name]) or (_pin(constraints[name]) if name in constraints else None)
        if pin is None:
            problems.append(f"{name}: pinned neither in {REQUIREMENTS.name} nor the constraints")
        elif not dep.specifier.contains(pin, prereleases=True):
            problems.append(f"{name}: pinned to {pin}, but pyproject.toml wants {dep}")
    problems += [
        f"{name}: not a runtime dependency, so it needs its own == pin"
        for name, req in binder.items()
        if name not in runtime and _pin(req) is None
    ]
    assert not problems, "\n".join(problems)


def test_repo2docker_accepts_the_repository(repo_copy: Path) -> None:
    """repo2docker (no Docker engine needed with --no-build) picks Python 3.11, installs
    binder/requirements.txt once the whole repository is copied in, as its -c needs, then
    runs binder/postBuild."""
    repo2docker = Path(sys.executable).parent / "jupyter-repo2docker"
    result = _run(
        [repo2docker, "--no-build", "--user-id", "1000", "--user-name", "jovyan", repo_copy],
        timeout=120,
    )
    assert result.returncode == 0, _tail(result)
    dockerfile = result.stdout
    assert "python=3.11" in result.stderr, _tail(result)
    copy_all = dockerfile.find("COPY --chown=1000:1000 src/ ${REPO_DIR}/")
    install = dockerfile.find('pip install --no-cache-dir -r "binder/requirements.txt"')
    post_build = dockerfile.find("RUN ./binder/postBuild")
    assert -1 < copy_all < install < post_build, dockerfile


def test_binder_environment_runs_the_welcome_notebook(repo_copy: Path, tmp_path: Path) -> None:
    """A fresh venv built from binder/ alone (requirements.txt, then postBuild) runs the welcome
    notebook, in a kernel of that venv rather than of the venv running the tests."""
    welcome = repo_copy / WELCOME
    if not welcome.is_file():
        pytest.skip(f"{WELCOME} is not written yet")
    venv = tmp_path / "venv"
    created = _run([sys.executable, "-m", "venv", venv])
    assert created.returncode == 0, _tail(created)
    bin_dir = venv / "bin"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        # Kernel specs from the fresh venv only, not from the user's or the test runner's.
        "JUPYTER_PATH": str(venv / "share" / "jupyter"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
        # Where download.pytorch.org is unreachable, give up on it at once for each package.
        "PIP_RETRIES": "0",
    }
    installed = _run(
        [bin_dir / "pip", "install", "--no-cache-dir", "-r", "binder/requirements.txt"],
        cwd=repo_copy,
        env=env,
        timeout=1200,
    )
    assert installed.returncode == 0, _tail(installed)
    # npm's install of anvil and js-ipfs is the setup's own step (make test runs it for real);
    # here a stand-in npm records that postBuild asks for it, from the lockfile.
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    (fake_bin / "npm").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "npm-args"}\n')
    (fake_bin / "npm").chmod(0o755)
    build_env = {**env, "PATH": f"{fake_bin}{os.pathsep}{env['PATH']}"}
    post_build = _run(
        [repo_copy / "binder" / "postBuild"], cwd=repo_copy, env=build_env, timeout=300
    )
    assert post_build.returncode == 0, _tail(post_build)
    assert (tmp_path / "npm-args").read_text().startswith("install --no-save")

    def papermill(notebook: Path) -> Path:
        """Run a notebook with the fresh venv's papermill and its python3 kernel."""
        out = tmp_path / f"{notebook.stem}.out.ipynb"
        command = [bin_dir / "python", "-m", "papermill", notebook, out, "-k", "python3"]
        result = _run([*command, "--cwd", notebook.parent], env=env, timeout=600)
        assert result.returncode == 0, _tail(result)
        return out

    probe = write_notebook(
        tmp_path / "probe.ipynb",
        "import json, sys\nimport ipfshttpclient, matplotlib, om_teach, sklearn, torch\n"
        "import vyper, web3\n"
        "print(json.dumps([sys.executable, om_teach.__file__, torch.__version__]))",
    )
    outputs = nbformat.read(papermill(probe), as_version=4).cells[-1].outputs
    executable, package, torch_version = json.loads(outputs[0]["text"])
    assert Path(executable).parent == bin_dir, f"kernel ran {executable}, not the fresh venv"
    assert Path(package).is_relative_to(repo_copy), f"om_teach imported from {package}"
    assert torch_version.endswith("+cpu"), torch_version
    papermill(welcome)
