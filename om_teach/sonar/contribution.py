"""A mine's contribution in Helium: its Paillier ciphertext sealed to the capsule and signed.

A bare Paillier ciphertext on a public store can be copied, re-randomised, negated or combined
by anyone (Paillier is malleable): two extra addresses resubmitting a victim's re-encoded
ciphertext triple its weight in the sum; one address submitting the negation of the others'
ciphertexts leaves the victim's gradient alone in it. So each mine

1. seals its ciphertext to the capsule's X25519 key with HPKE (RFC 9180), whose ``info``
   binds the chain id, the contract, the model, the round and the mine's address
   (:class:`Context`): only the capsule can open it, and a box resubmitted under any other
   context does not open;
2. signs the sealed bytes and their context with its own Ed25519 key, which the capsule's
   operator admitted: no other party can produce a contribution that counts for it.

The stored bytes are canonical JSON; their CID on chain commits to the sealed box. The capsule
rebuilds the context from what the chain says (the round and who submitted), never from the
contribution itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite
from phe import PaillierPublicKey

from om_teach.crypto.paillier import EncryptedVector
from om_teach.sonar.model import canonical_json

FORMAT = "om-teach/sonar-contribution/1"
SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_128_GCM)
_SIGNED = b"om-teach/sonar-contribution/1 signed\n"
MAX_BYTES = 1 << 22


class InvalidContribution(ValueError):
    """A contribution that does not open, verify or parse; the message says which."""


@dataclass(frozen=True)
class Context:
    """Where a contribution belongs: the HPKE ``info`` and part of what the mine signs."""

    chain_id: int
    contract: str
    model_id: int
    round: int
    mine: str

    def to_bytes(self) -> bytes:
        fields = asdict(self) | {"contract": self.contract.lower(), "mine": self.mine.lower()}
        return canonical_json({"format": "om-teach/sonar-context/1", **fields})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def seal(
    vector: EncryptedVector,
    context: Context,
    *,
    sealing_key: X25519PublicKey,
    signing_key: Ed25519PrivateKey,
) -> bytes:
    """The stored form of ``vector``: sealed to ``sealing_key`` under ``context``, signed."""
    box = SUITE.encrypt(canonical_json(vector.to_dict()), sealing_key, info=context.to_bytes())
    signature = signing_key.sign(_SIGNED + context.to_bytes() + box)
    return canonical_json({"format": FORMAT, "sealed": _b64(box), "signature": _b64(signature)})


def open_sealed(
    data: bytes,
    context: Context,
    *,
    sealing_key: X25519PrivateKey,
    verify_key: Ed25519PublicKey,
    public_key: PaillierPublicKey,
) -> EncryptedVector:
    """The ciphertext inside ``data``, if ``verify_key`` signed it under ``context`` and it
    opens with ``sealing_key`` under ``context``; InvalidContribution naming the failure."""
    if len(data) > MAX_BYTES:
        raise InvalidContribution(f"{len(data)} bytes, more than a contribution's {MAX_BYTES}")
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise InvalidContribution(f"not a sealed contribution of format {FORMAT!r}")
        box = base64.b64decode(raw["sealed"], validate=True)
        signature = base64.b64decode(raw["signature"], validate=True)
    except InvalidContribution:
        raise
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error) as error:
        raise InvalidContribution(f"not a sealed contribution: {error}") from None
    try:
        verify_key.verify(signature, _SIGNED + context.to_bytes() + box)
    except InvalidSignature:
        raise InvalidContribution(
            f"the signature is not the admitted key's for {context.mine} in round "
            f"{context.round} of model {context.model_id}"
        ) from None
    try:
        plain = SUITE.decrypt(box, sealing_key, info=context.to_bytes())
    except (InvalidTag, ValueError):
        raise InvalidContribution(
            "the box does not open: sealed to another key or under another context"
        ) from None
    try:
        return EncryptedVector.from_dict(json.loads(plain), public_key=public_key)
    except (UnicodeDecodeError, ValueError, TypeError) as error:
        raise InvalidContribution(
            f"the opened box is not a ciphertext under the key: {error}"
        ) from None


def ciphertext_digest(vector: EncryptedVector) -> bytes:
    """SHA-256 over a vector's key and ciphertexts: the same ciphertext, the same digest."""
    return hashlib.sha256(
        canonical_json([str(vector.public_key.n), *map(str, vector.ciphertexts)])
    ).digest()


def verify_key_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The 32-byte Ed25519 public key in hex: what a capsule's operator admits."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def parse_verify_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from 64 hex digits; ValueError naming the problem."""
    try:
        raw = bytes.fromhex(text)
        if len(raw) != 32:
            raise ValueError(f"{len(raw)} bytes, not 32")
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as error:
        raise ValueError(f"not an Ed25519 public key in hex ({text!r:.80}): {error}") from None


def load_signing_key(path: str | os.PathLike[str], *, create: bool = False) -> Ed25519PrivateKey:
    """A mine's Ed25519 key from a PEM file, made (mode 0600) when ``create`` and missing."""
    path = Path(path)
    if not path.exists() and create:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
        return key
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"cannot read the mine's signing key {path}: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key
