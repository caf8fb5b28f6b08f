"""Start the whole Sonar platform: in this process, or as separate processes.

- :func:`run_in_process`: every party in one process on eth-tester and a :class:`MemoryStore`,
  the mines as objects stepped in turn before each round (a notebook's first walkthrough, and
  the fast tests). Hydrogen by default (the scientist holds the key); ``helium=True`` puts the
  key in a :class:`~om_teach.sonar.capsule.Capsule` object in this same process, admits each
  mine's signing key to it, and pins every mine to its key record.
- :class:`Platform`: anvil (or ``rpc_url``), a :class:`DirectoryStore` folder (or
  ``ipfs_api``), the capsule process for Helium (``python -m om_teach.sonar.capsule_cli``) and one
  ``python -m om_teach.sonar.mine`` process per data owner. In Helium the platform plays the
  capsule's operator too: it makes the capsule's state folder, gives each mine a signing key
  file, admits those keys, and starts each mine with the capsule's fingerprint.
  :meth:`Platform.up` starts them, :meth:`Platform.demo` runs the scientist's rounds,
  :meth:`Platform.down` stops every process it started, by PID. The PIDs are also written to
  ``state.json`` in the run folder, so :func:`down` (``om-teach sonar down``) stops them from
  another shell.

The data: the diabetes training rows (:func:`om_teach.data.load_diabetes`) dealt iid to the
mines (:func:`om_teach.data.iid`); the scientist evaluates on the validation rows. Each mine
process gets its rows in an ``.npz`` file written here, so that it needs neither scikit-learn
nor pandas.

Threat model: as in :mod:`om_teach.sonar.mine`, :mod:`om_teach.sonar.scientist` and
:mod:`om_teach.sonar.capsule`. Separate processes make the separation of the parties real (a
mine's rows are in its process only; the scientist's process never holds the capsule's key),
but they share this machine, its user and the run folder, which holds every mine's rows: the
platform is a faithful local simulation, not a deployment. Anvil's accounts are unlocked, so
whoever reaches its port may send from any of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from om_teach.sonar.chain import AnvilNode, Chain
from om_teach.sonar.contract import ModelRepository, compile_contract
from om_teach.sonar.mine import Mine
from om_teach.sonar.scientist import LocalKeyAggregator, RoundRecord, RoundSum, Scientist
from om_teach.storage import ContentStore, DirectoryStore, IpfsStore, MemoryStore

if TYPE_CHECKING:
    from om_teach.data import Split

ETHER = 10**18
STATE_FILE = "state.json"


@dataclass(frozen=True)
class Settings:
    """What a run trains, and how: shared by the in-process run and the platform."""

    mines: int = 10
    seed: int = 0
    key_bits: int = 2048
    clip_norm: float = 10.0
    learning_rate: float = 0.1
    precision: float = 1e-6
    bounty_eth: float = 1.0
    target_error: float = 0.0


def owner_rows(settings: Settings) -> tuple[list[tuple[np.ndarray, np.ndarray]], Split]:
    """Each mine's (X, y) share of the diabetes training rows, and the split (for validation)."""
    from om_teach.data import iid, load_diabetes

    split = load_diabetes(settings.seed)
    shares = iid(len(split.y_train), settings.mines, settings.seed)
    return [(split.X_train[s], split.y_train[s]) for s in shares], split


@dataclass
class Federation:
    """Every party in this process: the scientist and the mines, on one chain and one store."""

    chain: Chain
    repository: ModelRepository
    store: ContentStore
    scientist: Scientist
    mines: list[Mine]
    capsule: Any = None
    failures: list[tuple[int, str, Exception]] = field(default_factory=list)

    def run_round(self, *, timeout: float = 0.5) -> RoundRecord:
        """Step every mine once (a mine that raises is recorded in :attr:`failures` and costs
        the round its gradient only), then run the scientist's round."""
        round = self.repository.current_round(self.scientist.model_id)
        for mine in self.mines:
            try:
                mine.step()
            except Exception as error:
                self.failures.append((round, mine.account, error))
        return self.scientist.run_round(timeout=timeout)


class CapsuleAggregator:
    """A :class:`~om_teach.sonar.capsule.Capsule` in this process, shaped like the
    ``CapsuleClient`` a scientist uses across processes (for notebooks and tests)."""

    def __init__(self, capsule: Any) -> None:
        self.capsule = capsule
        self.last_epsilon_spent: float | None = None

    def aggregate(self, model_id: int, round: int) -> RoundSum:
        release = self.capsule.aggregate(model_id, round)
        self.last_epsilon_spent = release.epsilon_spent
        settlement = release.settlement
        return RoundSum(release.sum, tuple(settlement.summed), settlement)


def in_process(
    settings: Settings = Settings(),
    *,
    store: ContentStore | None = None,
    helium: bool = False,
    noise_multiplier: float = 0.0,
    budget: float = 10.0,
    min_contributors: int = 3,
    insecure_seed: int | None = None,
    pinned: bool = True,
    sealed: bool = True,
    capsule_dir: str | os.PathLike[str] | None = None,
    extra_accounts: int = 0,
    chain: Chain | None = None,
) -> Federation:
    """A posted model and its mines on eth-tester and ``store`` (a new MemoryStore by
    default), ready for rounds.

    ``helium`` puts the key in a capsule (imports opacus, so torch) whose state lives in
    ``capsule_dir`` (a temporary folder by default) and that adds noise ``noise_multiplier``
    × C against ``budget``; ``insecure_seed`` repeats a lesson's noise (ε is then reported as
    ∞). ``pinned=False`` (mines take the key the bundle names) and ``sealed=False`` (bare
    ciphertexts, counted from any address) switch the defences off, to show the attacks.
    ``extra_accounts`` funds addresses that are not mines, for an attacker; ``chain`` replaces
    eth-tester (an anvil chain, say) and must have enough accounts."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from om_teach.sonar.contribution import verify_key_hex

    shards, split = owner_rows(settings)
    if chain is None:
        chain = Chain.embedded(accounts=settings.mines + 1 + extra_accounts)
    repository = ModelRepository.deploy(chain)
    store = MemoryStore() if store is None else store
    mine_accounts = chain.accounts[1 : settings.mines + 1]
    keys = [Ed25519PrivateKey.generate() for _ in mine_accounts]
    capsule, record = None, None
    if helium:
        from om_teach.sonar.capsule import Capsule

        if capsule_dir is None:
            capsule_dir = tempfile.mkdtemp(prefix="om-teach-capsule-")
        capsule = Capsule.create(
            repository,
            store,
            capsule_dir,
            key_bits=settings.key_bits,
            min_contributors=min_contributors,
            noise_multiplier=noise_multiplier,
            budget=budget,
            insecure_seed=insecure_seed,
            insecure_accept_unsealed=not sealed,
        )
        for account, key in zip(mine_accounts, keys, strict=True):
            capsule.admit(account, verify_key_hex(key))
        record = capsule.record
        aggregator: Any = CapsuleAggregator(capsule)
    else:
        aggregator = LocalKeyAggregator(repository, store, key_bits=settings.key_bits)
    scientist = Scientist(
        repository,
        store,
        aggregator,
        account=chain.accounts[0],
        X_val=split.X_val,
        y_val=split.y_val,
        capsule=record,
        public_key_n=capsule.public_key.n if capsule is not None and not pinned else None,
    )
    model_id = _post(scientist, settings)
    mines = [
        Mine(
            X,
            y,
            repository=repository,
            store=store,
            account=account,
            model_id=model_id,
            capsule=record if pinned else None,
            signing_key=key,
            seal=sealed,
        )
        for (X, y), account, key in zip(shards, mine_accounts, keys, strict=True)
    ]
    return Federation(chain, repository, store, scientist, mines, capsule)


def run_in_process(
    rounds: int, settings: Settings = Settings(), **options: Any
) -> list[RoundRecord]:
    """``rounds`` rounds with every party in this process; ``options`` as for
    :func:`in_process` (Hydrogen by default)."""
    federation = in_process(settings, **options)
    return [federation.run_round() for _ in range(rounds)]


def _post(scientist: Scientist, settings: Settings) -> int:
    return scientist.post(
        mines=settings.mines,
        clip_norm=settings.clip_norm,
        learning_rate=settings.learning_rate,
        bounty_wei=round(settings.bounty_eth * ETHER),
        precision=settings.precision,
        target_error=settings.target_error,
    )


def _started(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot, from /proc), None if it is gone or a
    zombie: with the PID, it names one process even after the PID is reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _started(pid) is not None or sys.platform != "linux"


def _stop_pid(pid: int, started: int | None, *, grace: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after ``grace`` s, the process ``pid`` if it is still the one we
    started (same start time); whether it was stopped."""
    if sys.platform == "linux" and (started is None or _started(pid) != started):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.02)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        _reap(pid)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def down(run_dir: str | os.PathLike[str]) -> list[int]:
    """Stop every process recorded in ``run_dir``'s state file (from any shell); their PIDs."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no platform state in {run_dir}: nothing was started there")
    state = json.loads(path.read_text())
    stopped = [
        entry["pid"]
        for entry in reversed(state["processes"])
        if _stop_pid(entry["pid"], entry["started"])
    ]
    path.unlink()
    return stopped


class Platform:
    """The platform as separate processes, started in ``run_dir``.

    ``rpc_url`` and ``ipfs_api`` use a chain and an IPFS daemon that are already running
    instead of starting anvil and a directory store. ``helium`` starts the capsule, which
    holds the key and adds noise ``noise_multiplier`` × C (0: none) against ``budget``.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        settings: Settings = Settings(),
        *,
        helium: bool = False,
        rpc_url: str | None = None,
        ipfs_api: str | None = None,
        noise_multiplier: float = 0.0,
        budget: float = 10.0,
        min_contributors: int = 3,
        ready_timeout: float = 120.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.helium = helium
        self.rpc_url = rpc_url
        self.ipfs_api = ipfs_api
        self.noise_multiplier = noise_multiplier
        self.budget = budget
        self.min_contributors = min_contributors
        self.ready_timeout = ready_timeout
        self.node: AnvilNode | None = None
        self.chain: Chain | None = None
        self.repository: ModelRepository | None = None
        self.store: ContentStore | None = None
        self.capsule_url: str | None = None
        self.fingerprint: str | None = None
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.model_id = 0
        self._split: Split | None = None

    def _store_args(self) -> list[str]:
        if self.ipfs_api:
            return ["--ipfs-api", self.ipfs_api]
        return ["--store", str(self.run_dir / "store")]

    def _spawn(self, name: str, args: list[str], **kwargs: Any) -> subprocess.Popen:
        with open(self.run_dir / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                [sys.executable, *args],
                stdout=kwargs.pop("stdout", log),
                stderr=log,
                stdin=subprocess.DEVNULL,
                **kwargs,
            )
        self.processes.append((name, process))
        return process

    def up(self) -> Self:
        """Start the chain, the store, the capsule (Helium) and the mines; wait until each mine
        is ready. On any failure, stop what was started and raise."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        settings = self.settings
        if self.rpc_url is None:
            self.node = AnvilNode(accounts=settings.mines + 1, log_path=self.run_dir / "anvil.log")
            self.node.start()
            self.rpc_url = self.node.url
        self.chain = Chain.connect(self.rpc_url)
        if len(self.chain.accounts) < settings.mines + 1:
            raise ValueError(
                f"the node at {self.rpc_url} has {len(self.chain.accounts)} accounts; "
                f"{settings.mines} mines and a scientist need {settings.mines + 1}"
            )
        self.store = (
            IpfsStore(self.ipfs_api) if self.ipfs_api else DirectoryStore(self.run_dir / "store")
        )
        self.repository = ModelRepository.deploy(self.chain)
        self.model_id = self.repository.model_count()
        common = ["--rpc-url", self.rpc_url, "--contract", self.repository.address]
        common += self._store_args()
        mine_keys = [self.run_dir / f"mine-{i + 1}.key" for i in range(settings.mines)]
        if self.helium:
            self._start_capsule(common, mine_keys)
        abi = self.run_dir / "abi.json"
        abi.write_text(json.dumps(compile_contract()[0]))
        common += ["--abi", str(abi)]
        shards, self._split = owner_rows(settings)
        if self.helium:
            common += ["--capsule", self.fingerprint, "--capsule-url", self.capsule_url]
        for i, (X, y) in enumerate(shards):
            rows = self.run_dir / f"mine-{i + 1}.npz"
            np.savez(rows, X=X, y=y)
            ready = self.run_dir / f"mine-{i + 1}.ready"
            ready.unlink(missing_ok=True)
            key = ["--key", str(mine_keys[i])] if self.helium else []
            self._spawn(
                f"mine-{i + 1}",
                [
                    "-m", "om_teach.sonar.mine", *common, *key,
                    "--model-id", str(self.model_id),
                    "--account-index", str(i + 1),
                    "--rows", str(rows),
                    "--ready-file", str(ready),
                    "--stop-file", str(self.run_dir / "stop"),
                ],
            )  # fmt: skip
        self._write_state()
        self._wait_ready()

    def _start_capsule(self, common: list[str], mine_keys: list[Path]) -> None:
        """As the capsule's operator: make its keys, admit each mine's signing key (made here,
        mode 0600), and start it; its ready line gives its URL and fingerprint."""
        from om_teach.sonar.capsule import DELTA
        from om_teach.sonar.capsule_state import CapsuleState
        from om_teach.sonar.contribution import load_signing_key, verify_key_hex

        state = CapsuleState.create(
            self.run_dir / "capsule",
            chain_id=self.chain.web3.eth.chain_id,
            contract=self.repository.address,
            key_bits=self.settings.key_bits,
            min_contributors=self.min_contributors,
            noise_multiplier=self.noise_multiplier,
            budget=self.budget,
            delta=DELTA,
        )
        try:
            for i, path in enumerate(mine_keys):
                path.unlink(missing_ok=True)
                key = verify_key_hex(load_signing_key(path, create=True))
                state.admit(self.chain.accounts[i + 1], key)
            self.fingerprint = state.record.fingerprint
        finally:
            state.close()
        capsule = self._spawn(
            "capsule",
            [
                "-m", "om_teach.sonar.capsule_cli", "serve", *common,
                "--data", str(self.run_dir / "capsule"), "--fingerprint", self.fingerprint,
            ],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        ready, _, _ = select.select([capsule.stdout], [], [], self.ready_timeout)
        line = capsule.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(
                f"the capsule did not start within {self.ready_timeout} s; "
                f"see {self.run_dir / 'capsule.log'}"
            )
        self.capsule_url = json.loads(line)["url"]

    def _write_state(self) -> None:
        processes = [
            {"name": name, "pid": p.pid, "started": _started(p.pid)} for name, p in self.processes
        ]
        if self.node is not None:
            anvil = {"name": "anvil", "pid": self.node.pid, "started": _started(self.node.pid)}
            processes.insert(0, anvil)
        state = {
            "rpc_url": self.rpc_url,
            "contract": self.repository.address,
            "ipfs_api": self.ipfs_api,
            "capsule_url": self.capsule_url,
            "capsule": self.fingerprint,
            "helium": self.helium,
            "model_id": self.model_id,
            "settings": asdict(self.settings),
            "processes": processes,
        }
        temporary = self.run_dir / f".{STATE_FILE}.tmp"
        temporary.write_text(json.dumps(state, indent=1))
        temporary.replace(self.run_dir / STATE_FILE)

    @classmethod
    def attach(cls, run_dir: str | os.PathLike[str]) -> Platform:
        """The platform that ``om-teach sonar up`` left running in ``run_dir``; its processes
        are not this one's children: stop them with :func:`down`."""
        path = Path(run_dir) / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no platform is up in {run_dir}: run `om-teach sonar up`")
        state = json.loads(path.read_text())
        platform = cls(
            run_dir,
            Settings(**state["settings"]),
            helium=state["helium"],
            rpc_url=state["rpc_url"],
            ipfs_api=state["ipfs_api"],
        )
        platform.chain = Chain.connect(state["rpc_url"])
        platform.repository = ModelRepository.at(platform.chain, state["contract"])
        platform.store = (
            IpfsStore(platform.ipfs_api)
            if platform.ipfs_api
            else DirectoryStore(platform.run_dir / "store")
        )
        platform.capsule_url = state["capsule_url"]
        platform.fingerprint = state["capsule"]
        platform.model_id = state["model_id"]
        _, platform._split = owner_rows(platform.settings)
        return platform

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        for name, process in self.processes:
            if not name.startswith("mine"):
                continue
            ready = self.run_dir / f"{name}.ready"
            while not ready.exists():
                if process.poll() is not None:
                    log = (self.run_dir / f"{name}.log").read_text().strip()
                    raise RuntimeError(f"{name} exited with {process.returncode}: {log[-500:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} was not ready within {self.ready_timeout} s")
                time.sleep(0.05)

    def scientist(self) -> Scientist:
        """The data scientist of this platform, with the capsule or its own key as aggregator."""
        if self.repository is None:
            raise RuntimeError("start the platform first: Platform.up()")
        record = None
        if self.helium:
            from om_teach.sonar.capsule_http import CapsuleClient

            aggregator: Any = CapsuleClient(self.capsule_url)
            record = aggregator.record(self.fingerprint)
        else:
            aggregator = LocalKeyAggregator(
                self.repository, self.store, key_bits=self.settings.key_bits
            )
        return Scientist(
            self.repository,
            self.store,
            aggregator,
            account=self.chain.accounts[0],
            X_val=self._split.X_val,
            y_val=self._split.y_val,
            capsule=record,
        )

    def demo(
        self, rounds: int, *, timeout: float = 60.0, progress: bool = True
    ) -> list[RoundRecord]:
        """Post the model, run ``rounds`` rounds (each waits at most ``timeout`` s for the
        mines), then withdraw what is left of the bounty, which stops the mines."""
        from tqdm.auto import tqdm

        scientist = self.scientist()
        model_id = _post(scientist, self.settings)
        if model_id != self.model_id:
            raise RuntimeError(
                f"posted model {model_id}, but the mines watch model {self.model_id}"
            )
        records = []
        with tqdm(total=rounds, desc="Sonar rounds", unit="round", disable=not progress) as bar:
            for _ in range(rounds):
                record = scientist.run_round(timeout=timeout)
                records.append(record)
                bar.set_postfix(mse=f"{record.mse:.4f}", mines=len(record.contributors))
                bar.update()
        scientist.withdraw()
        return records

    def down(self) -> None:
        """Stop every process this platform started (mines, capsule, anvil), by PID."""
        (self.run_dir / "stop").touch()
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        self.processes.clear()
        if self.node is not None:
            self.node.stop()
            self.node = None
        (self.run_dir / STATE_FILE).unlink(missing_ok=True)
        (self.run_dir / "stop").unlink(missing_ok=True)

    def detach(self) -> None:
        """Leave the processes running when this Python process exits (``om-teach sonar up``):
        stop them later with :func:`down` on the run folder."""
        if self.node is not None:
            self.node._finalizer.detach()

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
