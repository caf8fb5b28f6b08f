"""The capsule's durable state: one SQLite file, made under umask 077.

It holds the capsule's keys and key record, the admitted mines' signing keys, the digest of
every ciphertext the capsule opened, and each round it released with the ε spent after it. A
release and its digests are written in one transaction, committed before the sum leaves the
capsule's process: a SIGKILL can cost a round, but a restarted capsule never releases it again
and never forgets what it spent.

Threat model: the file holds the private keys. Whoever reads it is the capsule; whoever writes
it admits mines. It is created readable by its owner only (0600 in a 0700 folder), and it is
bound to one capsule: opened with another capsule's fingerprint, chain or contract, it is
refused.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount
from phe import PaillierPrivateKey, PaillierPublicKey

from om_teach.crypto.paillier import generate_keypair
from om_teach.sonar.contribution import parse_verify_key, verify_key_hex
from om_teach.sonar.record import KeyRecord, check_fingerprint

FILENAME = "capsule.sqlite"
SCHEMA = """
CREATE TABLE capsule (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT NOT NULL,
    record BLOB NOT NULL,
    paillier_p TEXT NOT NULL,
    paillier_q TEXT NOT NULL,
    sealing_key BLOB NOT NULL,
    signing_key BLOB NOT NULL
);
CREATE TABLE admitted (
    address TEXT PRIMARY KEY,
    verify_key TEXT NOT NULL UNIQUE
);
CREATE TABLE opened (
    digest BLOB PRIMARY KEY,
    model_id INTEGER NOT NULL,
    round INTEGER NOT NULL
);
CREATE TABLE releases (
    model_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    noisy INTEGER NOT NULL,
    epsilon REAL,
    settlement BLOB NOT NULL,
    PRIMARY KEY (model_id, round)
);
"""


class StateMismatch(ValueError):
    """A capsule database that belongs to another capsule, chain or contract."""


@dataclass(frozen=True)
class Release:
    """One released round, as recorded."""

    model_id: int
    round: int
    noisy: bool
    epsilon: float | None
    settlement: bytes


class CapsuleState:
    """The capsule's SQLite file: keys, admitted mines, opened ciphertexts, releases."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        row = self._db.execute(
            "SELECT record, paillier_p, paillier_q, sealing_key, signing_key FROM capsule"
        ).fetchone()
        if row is None:
            raise StateMismatch(f"{path} holds no capsule: it was never initialised")
        self.record = KeyRecord.from_bytes(row[0])
        public = PaillierPublicKey(self.record.paillier_n)
        self.paillier_private_key = PaillierPrivateKey(public, int(row[1]), int(row[2]))
        self.sealing_key = X25519PrivateKey.from_private_bytes(row[3])
        self.signer: LocalAccount = Account.from_key(row[4])

    def __repr__(self) -> str:
        return f"CapsuleState({str(self.path)!r}, capsule {self.record.fingerprint[:16]}...)"

    @classmethod
    def create(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        chain_id: int,
        contract: str,
        key_bits: int,
        min_contributors: int,
        noise_multiplier: float,
        budget: float,
        delta: float,
    ) -> CapsuleState:
        """Make a new capsule's keys and record in ``data_dir`` (made 0700 if missing);
        FileExistsError if a capsule is already there."""
        folder = Path(data_dir)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / FILENAME
        if path.exists():
            raise FileExistsError(f"a capsule database already exists at {path}")
        public, private = generate_keypair(key_bits)
        sealing = X25519PrivateKey.generate()
        signer = Account.create()
        record = KeyRecord(
            chain_id=chain_id,
            contract=contract,
            paillier_n=public.n,
            sealing_key=sealing.public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            .hex(),
            signer=signer.address,
            min_contributors=min_contributors,
            noise_multiplier=float(noise_multiplier),
            budget=float(budget),
            delta=float(delta),
        )
        secret = sealing.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        row = (record.fingerprint, record.to_bytes(), str(private.p), str(private.q), secret)
        previous = os.umask(0o077)
        try:
            connection = _connect(path)
            with _transaction(connection):
                for statement in filter(str.strip, SCHEMA.split(";")):
                    connection.execute(statement)
                connection.execute(
                    "INSERT INTO capsule VALUES (1, ?, ?, ?, ?, ?, ?)", (*row, bytes(signer.key))
                )
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            os.umask(previous)
        return cls(path, connection)

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        fingerprint: str | None = None,
        chain_id: int | None = None,
        contract: str | None = None,
    ) -> CapsuleState:
        """The capsule in ``data_dir``; StateMismatch if it is not the one expected."""
        path = Path(data_dir) / FILENAME
        if not path.is_file():
            raise FileNotFoundError(
                f"no capsule database at {path}: run `om-teach sonar capsule init`"
            )
        try:
            connection = _connect(f"file:{path}?mode=rw")
            state = cls(path, connection)
        except sqlite3.DatabaseError as error:
            raise StateMismatch(f"{path} is not a capsule database: {error}") from None
        record = state.record
        problems = []
        if fingerprint is not None and record.fingerprint != check_fingerprint(fingerprint):
            problems.append(f"its fingerprint is {record.fingerprint}, not {fingerprint}")
        if chain_id is not None and record.chain_id != chain_id:
            problems.append(f"it serves chain {record.chain_id}, not {chain_id}")
        if contract is not None and record.contract.lower() != contract.lower():
            problems.append(f"it serves contract {record.contract}, not {contract}")
        if problems:
            connection.close()
            raise StateMismatch(
                f"the capsule database {path} belongs to another capsule: {'; '.join(problems)}"
            )
        return state

    def close(self) -> None:
        self._db.close()

    def admit(self, address: str, verify_key: str) -> None:
        """Admit the mine that submits from ``address`` and signs with ``verify_key`` (hex)."""
        from web3 import Web3

        if not Web3.is_address(address):
            raise ValueError(f"not an Ethereum address: {address!r}")
        key = verify_key_hex(parse_verify_key(verify_key))
        try:
            with _transaction(self._db):
                self._db.execute(
                    "INSERT INTO admitted VALUES (?, ?)", (Web3.to_checksum_address(address), key)
                )
        except sqlite3.IntegrityError:
            raise ValueError(
                f"{address} or its key is already admitted: one key per mine, one mine per key"
            ) from None

    def admitted(self) -> dict[str, Ed25519PublicKey]:
        """The admitted mines: checksummed address -> signing key."""
        rows = self._db.execute("SELECT address, verify_key FROM admitted").fetchall()
        return {address: parse_verify_key(key) for address, key in rows}

    def opened_before(self, digests: Iterable[bytes]) -> set[bytes]:
        """Those of ``digests`` whose ciphertext the capsule has opened in any round."""
        found = set()
        for digest in digests:
            if self._db.execute("SELECT 1 FROM opened WHERE digest = ?", (digest,)).fetchone():
                found.add(digest)
        return found

    def released(self, model_id: int, round: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM releases WHERE model_id = ? AND round = ?", (model_id, round)
        ).fetchone()
        return row is not None

    def releases(self) -> list[Release]:
        """Every release, in the order it was made."""
        rows = self._db.execute(
            "SELECT model_id, round, noisy, epsilon, settlement FROM releases ORDER BY rowid"
        ).fetchall()
        return [Release(m, r, bool(noisy), e, s) for m, r, noisy, e, s in rows]

    def record_release(
        self,
        model_id: int,
        round: int,
        *,
        digests: Iterable[bytes],
        noisy: bool,
        epsilon: float | None,
        settlement: bytes,
    ) -> None:
        """Record a release and the ciphertexts it opened, in one committed transaction;
        ValueError (nothing written) if the round was released or a ciphertext opened before."""
        try:
            with _transaction(self._db):
                self._db.execute(
                    "INSERT INTO releases VALUES (?, ?, ?, ?, ?)",
                    (model_id, round, int(noisy), epsilon, settlement),
                )
                self._db.executemany(
                    "INSERT INTO opened VALUES (?, ?, ?)",
                    [(digest, model_id, round) for digest in digests],
                )
        except sqlite3.IntegrityError as error:
            raise ValueError(
                f"round {round} of model {model_id} cannot be recorded: {error}"
            ) from None


def _connect(where: str | Path) -> sqlite3.Connection:
    """Autocommit off by hand (explicit transactions); one connection shared by the capsule's
    server threads, which :class:`~om_teach.sonar.capsule.Capsule` serialises with its lock."""
    return sqlite3.connect(where, uri=True, isolation_level=None, check_same_thread=False)


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
