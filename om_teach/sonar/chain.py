"""The Ethereum chain the Sonar platform runs on: a connected ``Web3`` and funded accounts.

Three ways to get one, all returning a :class:`Chain`:

- :meth:`Chain.embedded`: eth-tester's py-evm in this process. No server, no port, about
  50 ms a transaction; the default for unit tests and a first walkthrough. eth-tester has no
  JSON-RPC server, so it cannot be shared: every party (scientist, mines) must live in this
  one process.
- :meth:`Chain.anvil`: a real local node, Foundry's ``anvil``, started here on 127.0.0.1 at a
  free port and stopped by its PID when the chain is closed (see :class:`AnvilNode`). Separate
  processes reach it through its URL, as the Hydrogen milestone's mines reach the chain.
- :meth:`Chain.connect`: any other JSON-RPC URL.

Threat model: a development chain. Its accounts are unlocked by the node (eth-tester's and
anvil's well-known keys), so whoever reaches the node may send from any of them: bind it to
127.0.0.1 and never send it real ether. The chain itself is the trusted party that runs the
contract's rules as written; everything on it is public, which is why only CIDs of encrypted
gradients go there.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from web3 import EthereumTesterProvider, HTTPProvider, Web3

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = 12


def find_anvil() -> Path:
    """The native anvil binary: ``$OM_TEACH_ANVIL``, else the one ``npm install`` put in the
    project's ``node_modules/@foundry-rs/anvil-<os>-<arch>/bin``, else ``anvil`` on the PATH.

    ``node_modules/.bin/anvil`` is a Node wrapper that spawns this binary as its child, so
    starting it would leave two processes and a killed wrapper could orphan the node.
    """
    os_name = {"linux": "linux", "darwin": "darwin", "win32": "win32"}.get(sys.platform)
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    exe = "anvil.exe" if sys.platform == "win32" else "anvil"
    package = ROOT / "node_modules" / "@foundry-rs" / f"anvil-{os_name}-{arch}" / "bin" / exe
    for candidate in (os.environ.get("OM_TEACH_ANVIL"), package, shutil.which("anvil")):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    raise FileNotFoundError(
        f"anvil not found: run `npm install` in {ROOT} (it installs @foundry-rs/anvil and its "
        f"native binary {package.relative_to(ROOT)}), or set OM_TEACH_ANVIL to the binary"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str, timeout: float) -> bool:
    provider = HTTPProvider(
        url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None
    )
    return provider.is_connected()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class AnvilNode:
    """A local anvil node on 127.0.0.1, started on entering and stopped on leaving.

    The binary itself is started (never through npx), so stopping it ends one PID. Its output
    goes to ``log_path``; if it has not answered JSON-RPC within ``ready_timeout`` seconds it
    is stopped and the error names the log.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        accounts: int = ACCOUNTS,
        binary: str | Path | None = None,
        ready_timeout: float = 15.0,
        log_path: str | Path | None = None,
    ) -> None:
        if accounts < 1:
            raise ValueError(f"anvil needs at least one account, got {accounts}")
        self.port = port
        self.accounts = accounts
        self.binary = Path(binary) if binary else None
        self.ready_timeout = ready_timeout
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None
        self._log_dir: Path | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the node has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> Self:
        """Start the node and wait until it answers JSON-RPC."""
        if self.process is not None:
            raise RuntimeError(f"anvil already started (pid {self.pid})")
        binary = self.binary or find_anvil()
        self.port = self.port or _free_port()
        if self.log_path is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="om-teach-anvil-"))
            self.log_path = self._log_dir / "anvil.log"
        command = [binary, "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--accounts", str(self.accounts), "--silent"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._finalizer = weakref.finalize(self, _stop, self.process)
        deadline = time.monotonic() + self.ready_timeout
        while not _answers(self.url, timeout=0.5):
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"anvil exited with code {code} on start; see {self.log_path}")
            if time.monotonic() > deadline:
                self._finalizer()
                self.process = None
                raise TimeoutError(
                    f"anvil did not answer at {self.url} within {self.ready_timeout} s; "
                    f"see {self.log_path}"
                )
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop the node (terminate, then kill after 5 s) and remove the log it was given by
        default; a no-op when it is not running."""
        if self.process is not None:
            self._finalizer()
            self.process = None
            if self._log_dir is not None:
                shutil.rmtree(self._log_dir, ignore_errors=True)
                self._log_dir = self.log_path = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Chain:
    """A connected ``Web3`` with its funded, unlocked accounts.

    ``name`` says what it runs on ("eth-tester", "anvil" or the URL). A chain started here
    (anvil) is stopped by :meth:`close`, or by leaving it as a context manager.
    """

    web3: Web3
    accounts: list[str]
    name: str
    node: AnvilNode | None = field(default=None, repr=False)

    @classmethod
    def embedded(cls, *, accounts: int = ACCOUNTS) -> Chain:
        """eth-tester (py-evm) in this process, with ``accounts`` funded accounts."""
        from eth_tester import EthereumTester, PyEVMBackend

        if accounts < 1:
            raise ValueError(f"the chain needs at least one account, got {accounts}")
        genesis = PyEVMBackend.generate_genesis_state(num_accounts=accounts)
        tester = EthereumTester(PyEVMBackend(genesis_state=genesis))
        web3 = Web3(EthereumTesterProvider(tester))
        return cls(web3, list(web3.eth.accounts), "eth-tester")

    @classmethod
    def anvil(
        cls,
        port: int | None = None,
        *,
        accounts: int = ACCOUNTS,
        binary: str | Path | None = None,
        ready_timeout: float = 15.0,
    ) -> Chain:
        """Start an anvil node (see :class:`AnvilNode`) and connect to it; close the chain to
        stop the node."""
        node = AnvilNode(port, accounts=accounts, binary=binary, ready_timeout=ready_timeout)
        started = node.start()
        try:
            chain = cls.connect(started.url)
        except Exception:
            started.stop()
            raise
        return cls(chain.web3, chain.accounts, "anvil", started)

    @classmethod
    def connect(cls, rpc_url: str, *, timeout: float = 2.0) -> Chain:
        """Connect to a JSON-RPC node at ``rpc_url``; its unlocked accounts are the chain's.

        Raises ConnectionError naming the URL when nothing answers there within ``timeout``
        seconds (no retries).
        """
        if not rpc_url.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) JSON-RPC URL, got {rpc_url!r}")
        provider = HTTPProvider(
            rpc_url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None
        )
        web3 = Web3(provider)
        try:
            provider.is_connected(show_traceback=True)
        except Exception as error:
            raise ConnectionError(
                f"no Ethereum JSON-RPC node answers at {rpc_url}: {error}"
            ) from error
        return cls(web3, list(web3.eth.accounts), rpc_url)

    def close(self) -> None:
        """Stop the node this chain started, if any."""
        if self.node is not None:
            self.node.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
