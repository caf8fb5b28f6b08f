"""A throwaway PostgreSQL server for trying the node on PostgreSQL, and for its tests: Debian's
``postgresql`` binaries, a cluster in a temporary folder, listening on 127.0.0.1 only, stopped
by PID. PostgreSQL refuses to run as root, so under root it runs as ``nobody``."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from om_teach.node.process import free_port


def find_bin() -> Path:
    """The folder of ``initdb`` and ``postgres``; FileNotFoundError saying how to install them."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise FileNotFoundError(
        "PostgreSQL is not installed: `sudo apt-get install postgresql` (make runs it as root)"
    )


class LocalPostgres:
    """A PostgreSQL cluster in a temporary folder; ``url`` is its SQLAlchemy URL."""

    def __init__(self) -> None:
        self.bin = find_bin()
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="om-teach-pg-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://omteach@127.0.0.1:{self.port}/postgres"

    def _as_user(self, command: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return command
        shutil.chown(self.folder, "nobody", "nogroup")
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]

    def __enter__(self) -> LocalPostgres:
        data = self.folder / "data"
        initdb = [
            str(self.bin / "initdb"),
            "-D",
            str(data),
            "-U",
            "omteach",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]
        subprocess.run(self._as_user(initdb), check=True, capture_output=True)
        serve = [
            str(self.bin / "postgres"),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(self.folder),
        ]
        self.log = open(self.folder / "postgres.log", "wb")
        self.process = subprocess.Popen(
            self._as_user(serve), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("PostgreSQL did not start") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)
