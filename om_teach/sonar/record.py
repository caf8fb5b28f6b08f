"""The capsule's key record, and how a mine pins it by its fingerprint.

A capsule (Helium's key holder) publishes one record: the chain and contract it serves, its
Paillier public key (what mines encrypt gradients under), its X25519 public key (what mines
seal contributions to, with HPKE), the Ethereum address of its signing key (what the contract
checks settlements against with ``ecrecover``), k, the noise multiplier and the ε budget. The
record's SHA-256 over its canonical JSON is its fingerprint. A mine started with a fingerprint
fetches the record, checks the fingerprint, and takes every key from the record only: the
model bundle the scientist writes chooses nothing about keys.

Threat model: the record travels over an untrusted channel (a URL anyone may answer); the
fingerprint, given to the mine out of band by the capsule's operator, is what it trusts. A
record whose bytes do not hash to the pinned fingerprint is refused before any key is read.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from phe import PaillierPublicKey

from om_teach.sonar.model import canonical_json

FORMAT = "om-teach/sonar-capsule/1"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class PinMismatch(ValueError):
    """A record, a model entry or a bundle that does not match the pinned capsule."""


def check_fingerprint(fingerprint: object) -> str:
    """``fingerprint`` lower-cased if it is 64 hex digits (a SHA-256); ValueError otherwise."""
    if not isinstance(fingerprint, str) or not _HEX64.fullmatch(fingerprint.lower()):
        raise ValueError(
            f"a capsule fingerprint is 64 hex digits (the SHA-256 the capsule prints), "
            f"got {fingerprint!r:.80}"
        )
    return fingerprint.lower()


@dataclass(frozen=True)
class KeyRecord:
    """What a capsule publishes about itself; equal records have equal fingerprints."""

    chain_id: int
    contract: str
    paillier_n: int
    sealing_key: str
    signer: str
    min_contributors: int
    noise_multiplier: float
    budget: float
    delta: float

    def __post_init__(self) -> None:
        for name in ("chain_id", "paillier_n", "min_contributors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"key record field {name!r} must be a positive int: {value!r}")
        for name in ("contract", "signer"):
            if not isinstance(getattr(self, name), str) or not _ADDRESS.fullmatch(
                getattr(self, name)
            ):
                raise ValueError(f"key record field {name!r} must be an address")
        if not isinstance(self.sealing_key, str) or not _HEX64.fullmatch(self.sealing_key):
            raise ValueError("key record field 'sealing_key' must be 32 bytes in lower-case hex")
        for name in ("noise_multiplier", "budget", "delta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"key record field {name!r} must be a number: {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"key record field {name!r} must be finite and >= 0: {value!r}")

    @property
    def paillier_key(self) -> PaillierPublicKey:
        """The key mines encrypt their gradients under."""
        return PaillierPublicKey(self.paillier_n)

    @property
    def sealing_public_key(self) -> X25519PublicKey:
        """The key mines seal their contributions to (HPKE, X25519)."""
        return X25519PublicKey.from_public_bytes(bytes.fromhex(self.sealing_key))

    def to_bytes(self) -> bytes:
        """Canonical JSON, the bytes the fingerprint is taken over."""
        return canonical_json(
            {"format": FORMAT, **asdict(self), "paillier_n": str(self.paillier_n)}
        )

    @property
    def fingerprint(self) -> str:
        """SHA-256 of :meth:`to_bytes`, in hex."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyRecord:
        """Parse :meth:`to_bytes`'s form; ValueError naming what is wrong."""
        try:
            raw: Any = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"a capsule key record must be JSON: {error}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"not a capsule key record of format {FORMAT!r}")
        fields = set(cls.__dataclass_fields__)
        if set(raw) - {"format"} != fields:
            raise ValueError(f"key record fields: expected {sorted(fields)}, got {sorted(raw)}")
        n = raw["paillier_n"]
        if not (isinstance(n, str) and n.isascii() and n.isdigit()):
            raise ValueError("key record field 'paillier_n' must be a decimal string")
        return cls(**{name: raw[name] for name in fields} | {"paillier_n": int(n)})

    @classmethod
    def pinned(cls, data: bytes, fingerprint: str, *, where: str = "the key record") -> KeyRecord:
        """The record in ``data`` if its SHA-256 is ``fingerprint``; PinMismatch otherwise."""
        fingerprint = check_fingerprint(fingerprint)
        actual = hashlib.sha256(data).hexdigest()
        if actual != fingerprint:
            raise PinMismatch(
                f"{where} has fingerprint {actual}, not the pinned {fingerprint}: it is not "
                "the capsule this mine was started with (or it was tampered with); refusing "
                "its keys"
            )
        return cls.from_bytes(data)


def fetch_record(url: str, fingerprint: str, *, timeout: float = 30.0) -> KeyRecord:
    """The key record served at ``url``/record, checked against ``fingerprint``.

    ConnectionError names an unreachable capsule; PinMismatch a record that is not the pinned
    one."""
    fingerprint = check_fingerprint(fingerprint)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"expected the capsule's http(s) URL, got {url!r}")
    where = url.rstrip("/") + "/record"
    try:
        with urllib.request.urlopen(where, timeout=timeout) as response:
            data = response.read(1 << 16)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConnectionError(f"no capsule key record at {where}: {reason}") from error
    return KeyRecord.pinned(data, fingerprint, where=f"the key record at {where}")
