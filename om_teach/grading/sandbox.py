"""A Jupyter kernel inside a bubblewrap sandbox, for running student code.

The grader's own process runs papermill; only the kernel, which executes the student's code,
runs in the sandbox. It talks to the grader over ZMQ ``ipc`` sockets in a scratch folder, the
one writable place it has. bubblewrap mounts /usr, the libraries, the Python home, the virtual
environment and the om_teach package read-only; it unshares the network, process, IPC and host
namespaces and clears the environment. Inside, ``prlimit`` sets the limits and ``setpriv``
drops to an unprivileged uid before Python starts: bwrap's own ``--uid`` mapping run by root
keeps root's powers over the real files (see STACK.md), a real uid does not.

Threat model: the student's code is hostile. It may read anything mounted, so nothing else is
mounted (not the answer key, the roster, the instructor secret or the gradebook); it may try
the network, fork without end, eat memory or loop forever, and the limits stop it; it may
write, but only into its scratch folder, which the grader reads back as untrusted data. The
sandbox relies on the Linux namespaces and rlimits being sound; it is not a VM.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from traitlets import default

import om_teach
from om_teach.tree_limit import TreeLimit

FIRST_UID = 61000
"""Sandboxed kernels run as uids from here up: each grading run draws a block of its own, and
each parallel slot in it has its own uid, so that no submission's process limit can be spent
by another's, in this run or in one beside it."""
UID_BLOCKS = 4096
UID_BLOCK = 64
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""ZMQ drops a kernel message larger than this before the grader's worker holds any of it (a
cell printing 400 MB in one write would otherwise grow the worker by as much)."""


@dataclass(frozen=True)
class Limits:
    """What one submission's kernel may use."""

    cell_seconds: float = 10
    total_seconds: float = 90
    memory_mb: int = 3000
    cpu_seconds: int = 120
    processes: int = 64


def bubblewrap_version() -> str | None:
    """``"bubblewrap 0.8.0"`` when bwrap is installed and can make a sandbox here, else None."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    probe = subprocess.run(
        [bwrap, "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "true"],
        capture_output=True,
    )
    if probe.returncode != 0:
        return None
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True)
    return version.stdout.strip() or "bubblewrap"


def _ro_bind_with_parents(path: Path) -> list[str]:
    """Make each parent of ``path`` a 0755 directory, then bind ``path`` read-only.

    bwrap would create missing parents with mode 0700, which an unprivileged uid cannot cross
    (this machine's Python lives under root's home).
    """
    args = []
    for parent in reversed(path.parents[:-1]):
        args += ["--perms", "0755", "--dir", str(parent)]
    return [*args, "--ro-bind", str(path), str(path)]


def sandbox_command(scratch: Path, limits: Limits, uid: int) -> list[str]:
    """The command prefix that runs a program in the sandbox, as ``uid``, with ``limits``."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise FileNotFoundError("bwrap is not installed: apt-get install bubblewrap")
    package = Path(om_teach.__file__).resolve().parent
    mounts = ["--tmpfs", "/tmp", "--dev", "/dev", "--proc", "/proc"]
    for system in ("/usr", "/bin", "/lib", "/lib64", "/etc/alternatives"):
        if os.path.exists(system):
            mounts += ["--ro-bind", system, system]
    for path in dict.fromkeys(Path(p).resolve() for p in (sys.base_prefix, sys.prefix, package)):
        mounts += _ro_bind_with_parents(path)
    mounts += [*_parents(scratch), "--bind", str(scratch), str(scratch)]
    environment = {
        "HOME": str(scratch),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONPATH": str(package.parent),
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(scratch / ".matplotlib"),
        "JUPYTER_RUNTIME_DIR": str(scratch),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    setenv = [arg for key, value in environment.items() for arg in ("--setenv", key, value)]
    return [
        bwrap,
        *mounts,
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        *setenv,
        "--chdir",
        str(scratch),
        "prlimit",
        f"--nproc={limits.processes}",
        f"--as={limits.memory_mb * 1024 * 1024}",
        f"--cpu={limits.cpu_seconds}",
        "--core=0",
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ]


def _parents(path: Path) -> list[str]:
    return [
        arg for p in reversed(path.parents[:-1]) for arg in ("--perms", "0755", "--dir", str(p))
    ]


class CappedKernelClient(AsyncKernelClient):
    """A kernel client whose sockets refuse messages over :data:`MAX_MESSAGE_BYTES`."""

    @default("context")
    def _capped_context(self) -> zmq.asyncio.Context:
        context = super()._context_default()
        context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        return context


class SandboxedKernelManager(AsyncKernelManager):
    """A python3 kernel for untrusted code, reached over ipc sockets in ``scratch``.

    ``confined`` (the default) starts it inside the sandbox as ``uid``, and ``scratch`` is
    chowned to that uid; without it (``--unsafe-no-sandbox``) it runs as this user. Interrupts
    travel as messages, since signals cannot cross into the sandbox. The kernel's own output
    goes to ``kernel_log``, not to the grader's terminal. ``limit`` bounds the memory and
    processes of the kernel's whole tree; its clients drop messages over 8 MB.
    """

    @default("client_factory")
    def _capped_client(self) -> type[CappedKernelClient]:
        return CappedKernelClient

    def __init__(
        self,
        *,
        scratch: Path,
        limits: Limits,
        uid: int,
        kernel_log: Path,
        limit: TreeLimit,
        confined: bool = True,
        **kw,
    ) -> None:
        super().__init__(
            transport="ipc",
            ip=str(scratch / "kernel"),
            connection_file=str(scratch / "kernel.json"),
            **kw,
        )
        self.scratch, self.limits, self.uid = scratch, limits, uid
        self.kernel_log, self.confined, self.limit = kernel_log, confined, limit

    @property
    def kernel_spec(self) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name="om-teach sandbox",
            language="python",
            interrupt_mode="message",
        )

    async def _async_pre_start_kernel(self, **kw):
        log = self.kernel_log.open("ab")
        kw.update(stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        return await super()._async_pre_start_kernel(**kw)

    async def _async_post_start_kernel(self, **kw) -> None:
        await super()._async_post_start_kernel(**kw)
        process = getattr(self.provisioner, "process", None)
        if process is not None:
            self.limit.watch(process.pid)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        command = super().format_kernel_cmd(extra_arguments)
        if not self.confined:
            return self.limit.wrap(command)
        os.chown(self.scratch, self.uid, self.uid)
        os.chown(self.connection_file, self.uid, self.uid)
        return self.limit.wrap([*sandbox_command(self.scratch, self.limits, self.uid), *command])
