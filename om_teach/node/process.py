"""A node as a separate process: uvicorn on 127.0.0.1, started with the data folder and stopped
by its PID. For notebooks and tests; ``om-teach node serve`` is the same server in the
foreground."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NodeProcess:
    """``om-teach node serve`` in a child process; a context manager that stops it."""

    def __init__(
        self,
        data: str | os.PathLike[str],
        *,
        database_url: str | None = None,
        port: int | None = None,
        workers: int = 1,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.data, self.database_url = Path(data), database_url
        self.port, self.workers, self.extra = port or free_port(), workers, extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> NodeProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers; RuntimeError with its log otherwise."""
        self.data.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "om_teach.cli",
            "node",
            "serve",
            "--data",
            str(self.data),
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            *self.extra,
        ]
        if self.database_url:
            command += ["--database-url", self.database_url]
        self.log = self.data / "node.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the node exited with {self.process.returncode}:\n{self._tail()}"
                )
            try:
                httpx.get(self.url + "/protocol", timeout=1.0).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the node did not answer within {timeout} s:\n{self._tail()}")

    def kill(self) -> None:
        """SIGKILL the server and its workers, as a crash would."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the server (its workers with it), then SIGKILL after ``grace`` seconds."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        self.process = None

    def _tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
