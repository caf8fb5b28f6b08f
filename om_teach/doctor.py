"""``om-teach doctor``: what the course needs on this machine, what is there, and for each
missing piece the one command that fixes it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

TORCH_SERIES = "2.13"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
LATER = " (optional, later modules)"


@dataclass(frozen=True)
class Check:
    """One thing the course needs: whether it is there, what was found, and how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: str | None
    required: bool


def _package(name: str) -> Check:
    """A required Python distribution, found by its installed metadata (nothing is imported)."""
    try:
        return Check(name, True, version(name), None, True)
    except PackageNotFoundError:
        return Check(name, False, "not installed", f"pip install {name}", True)


def _python() -> Check:
    """The interpreter: pyproject.toml requires Python 3.11 or later."""
    found = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info >= (3, 11)
    return Check("Python", ok, found, None if ok else "make clean setup PYTHON=python3.11", True)


def _torch() -> Check:
    """torch 2.13.x; the local label of its version tells the CPU build from a CUDA one."""
    if sys.platform == "linux":
        fix = f"pip install torch=={TORCH_SERIES}.0+cpu --extra-index-url {CPU_INDEX}"
    else:
        fix = f"pip install torch=={TORCH_SERIES}.0"
    try:
        found = version("torch")
    except PackageNotFoundError:
        return Check("torch", False, "not installed", fix, True)
    public, _, local = found.partition("+")
    build = {"": "PyPI build, CUDA on Linux", "cpu": "CPU build"}.get(local, f"{local} build")
    if public == TORCH_SERIES or public.startswith(f"{TORCH_SERIES}."):
        return Check("torch", True, f"{found} ({build})", None, True)
    return Check("torch", False, f"{found} ({build}), want {TORCH_SERIES}.x", fix, True)


def _gmpy2() -> Check:
    """Whether phe found gmpy2: without it Paillier encrypts and decrypts 7-10x slower."""
    try:
        from phe import util
    except ImportError:
        return Check("gmpy2", False, "phe is not installed", "pip install phe gmpy2", False)
    if util.HAVE_GMP:
        return Check("gmpy2", True, f"{version('gmpy2')}, used by phe", None, False)
    detail = "phe runs without it, 7-10x slower (optional)"
    return Check("gmpy2", False, detail, "pip install gmpy2", False)


def _program(name: str, fix: str, why: str) -> Check:
    """An optional program on PATH, with the first line of what ``--version`` prints."""
    path = shutil.which(name)
    if path is None:
        return Check(name, False, f"not on PATH{why}", fix, False)
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return Check(name, False, f"{path} does not run: {error}", fix, False)
    return Check(name, True, (done.stdout.strip() or path).splitlines()[0], None, False)


def _node_tool(name: str, package: str, root: Path) -> Check:
    """An optional tool that npm installs into the repository's node_modules/.bin."""
    if (root / "node_modules" / ".bin" / name).exists():
        return Check(name, True, f"node_modules/.bin/{name}{LATER}", None, False)
    fix = f"npm install --prefix {root} {package}"
    return Check(name, False, f"not in node_modules/.bin{LATER}", fix, False)


def _grader_limits() -> Check:
    """Which limit bounds a submission's whole process tree here: a cgroup, or the watchdog."""
    from om_teach.tree_limit import available

    found = available()
    if found.startswith("watchdog"):
        fix = "run the grader as root, or delegate the memory and pids cgroup controllers to it"
        return Check("grader limits", False, found, fix, False)
    return Check("grader limits", True, found, None, False)


def run_checks(root: Path | None = None) -> list[Check]:
    """Check everything the course needs; ``root`` holds node_modules (default: the checkout)."""
    if root is None:
        from om_teach.syllabus import repo_root

        try:
            root = repo_root()
        except FileNotFoundError:  # outside a checkout: look in the current directory
            root = Path.cwd()
    return [
        _python(),
        _torch(),
        _package("phe"),
        _gmpy2(),
        _package("jupyterlab"),
        _package("papermill"),
        _package("nbval"),
        _program("bwrap", "apt-get install bubblewrap", " (optional: the exam grader's sandbox)"),
        _grader_limits(),
        _program("node", "apt-get install nodejs", LATER),
        _program("npm", "apt-get install npm", LATER),
        _node_tool("anvil", "@foundry-rs/anvil", root),
        _node_tool("jsipfs", "ipfs@0.66.1", root),
    ]


def report(checks: list[Check]) -> str:
    """One line per check: a tick or a cross, what was found, and for a cross its fix."""
    width = max(len(check.name) for check in checks)
    lines = []
    for check in checks:
        line = f"{'✓' if check.ok else '✗'} {check.name:<{width}}  {check.detail}"
        lines.append(line if check.ok else f"{line}  ->  {check.fix}")
    return "\n".join(lines)
