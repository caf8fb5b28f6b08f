"""Start and stop a local js-ipfs daemon, offline, for the tests and the Sonar platform.

Kubo cannot be installed from a registry here, so the daemon is js-ipfs (npm ``ipfs@0.66.1``,
pure JavaScript, in the repository's ``node_modules``). It is initialised with the ``test``
profile and an empty repo, then configured to talk to nobody: the HTTP API on 127.0.0.1 only, no
swarm listeners, gateway, gRPC, bootstrap peers, delegates or MDNS. The daemon runs as one
``node`` process, so stopping it by its PID stops all of it.

Threat model: the daemon trusts whoever reaches its API, and its API is bound to 127.0.0.1, so
every local user and process may read, add and unpin content. Nothing leaves the machine. What
it serves is checked against its CID by :class:`~om_teach.storage.ipfs.IpfsStore`: integrity,
not confidentiality or availability.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

POLYFILL = Path(__file__).with_name("withresolvers.cjs")
ROOT = Path(__file__).resolve().parents[2]


def default_jsipfs() -> Path:
    """Where ``npm install`` at the repository root puts the jsipfs command."""
    return ROOT / "node_modules" / ".bin" / "jsipfs"


class JsIpfsDaemon:
    """A js-ipfs daemon whose repo is ``repo_dir`` and whose HTTP API listens on
    127.0.0.1:``api_port``; use it as a context manager, or call :meth:`start` and :meth:`stop`.

    The repo is initialised on first start and kept, so content survives a restart. The
    daemon's output goes to ``repo_dir/daemon.log``.
    """

    def __init__(
        self,
        repo_dir: str | os.PathLike[str],
        api_port: int,
        *,
        jsipfs: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        if not 0 < api_port < 65536:
            raise ValueError(f"api_port must be a TCP port (1-65535), got {api_port}")
        self.repo_dir = Path(repo_dir)
        self.api_port = api_port
        self.jsipfs = Path(jsipfs) if jsipfs is not None else default_jsipfs()
        self.startup_timeout = startup_timeout
        self.log_path = self.repo_dir / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        """The API's multiaddr, as :class:`~om_teach.storage.ipfs.IpfsStore` takes it."""
        return f"/ip4/127.0.0.1/tcp/{self.api_port}/http"

    def __repr__(self) -> str:
        state = f"pid {self.process.pid}" if self.running else "stopped"
        return f"JsIpfsDaemon({str(self.repo_dir)!r}, {self.api_port}, {state})"

    def __enter__(self) -> JsIpfsDaemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the daemon's process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Initialise the repo if needed, configure it offline, start the daemon and wait until
        its API answers; on failure the process is stopped and the error names the log."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        command = self._command()
        env = self._environment()
        if not (self.repo_dir / "config").exists():
            self._init(command, env)
        peer_id = self._configure()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*command, "daemon", "--offline"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            self._wait_until_ready(self.process, peer_id)
        except BaseException:
            self.stop()
            raise

    def stop(self, *, grace: float = 10.0) -> None:
        """Ask the daemon to shut down (SIGTERM), and kill it if it has not within ``grace``
        seconds. Stopping a stopped daemon does nothing."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def _command(self) -> list[str]:
        node = shutil.which("node")
        if node is None:
            raise FileNotFoundError("js-ipfs needs Node.js: no `node` on PATH")
        if not self.jsipfs.exists():
            raise FileNotFoundError(
                f"no jsipfs at {self.jsipfs}: run `npm install` in {ROOT} (package.json)"
            )
        return [node, str(self.jsipfs.resolve())]

    def _environment(self) -> dict[str, str]:
        options = os.environ.get("NODE_OPTIONS", "")
        return {
            **os.environ,
            "IPFS_PATH": str(self.repo_dir),
            "NODE_OPTIONS": f'{options} --require "{POLYFILL}"'.strip(),
        }

    def _init(self, command: list[str], env: dict[str, str]) -> None:
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [*command, "init", "--profile", "test", "--empty-repo"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            timeout=self.startup_timeout,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise RuntimeError(
                f"`jsipfs init` in {self.repo_dir} failed ({done.returncode}):\n{output}"
            )

    def _configure(self) -> str:
        """Point the API at our port and switch off everything that reaches out; return the
        daemon's peer ID, which tells our daemon from anything else on the port."""
        path = self.repo_dir / "config"
        config = json.loads(path.read_text())
        addresses = config.setdefault("Addresses", {})
        addresses.update(
            API=f"/ip4/127.0.0.1/tcp/{self.api_port}",
            Gateway=[],
            Swarm=[],  # a listener with --offline hangs the daemon
            Announce=[],
            Delegates=[],
        )
        addresses.pop("RPC", None)  # no gRPC server
        config["Bootstrap"] = []
        discovery = config.setdefault("Discovery", {})
        discovery["MDNS"] = {**discovery.get("MDNS", {}), "Enabled": False}
        discovery["webRTCStar"] = {"Enabled": False}
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(config, indent=2))
        os.replace(temporary, path)
        return str(config["Identity"]["PeerID"])

    def _wait_until_ready(self, process: subprocess.Popen[bytes], peer_id: str) -> None:
        url = f"http://127.0.0.1:{self.api_port}/api/v0/id"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = process.poll()
            if code is not None:
                raise RuntimeError(
                    f"the js-ipfs daemon exited ({code}) before its API answered; "
                    f"see {self.log_path}:\n{self._log_tail()}"
                )
            try:
                with direct.open(urllib.request.Request(url, method="POST"), timeout=1) as r:
                    if json.load(r).get("ID") == peer_id:
                        return
            except (OSError, ValueError):
                pass  # not listening yet (or someone else is, until our daemon fails to bind)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the js-ipfs daemon's API on 127.0.0.1:{self.api_port} did not answer "
                    f"within {self.startup_timeout} s; see {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(0.1)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
