"""Certificates: an exam result signed with the instructor's Ed25519 key, checkable by anyone
who holds the matching public key (Bernstein, Duif, Lange, Schwabe and Yang, "High-speed
high-security signatures", CHES 2011; RFC 8032).

A certificate is canonical JSON, in the spirit of RFC 8785: sorted keys, no whitespace, UTF-8.
The signature covers the canonical form of every field but itself, rebuilt from the parsed
JSON, so re-indenting a certificate keeps it valid and changing any value (or its type) does not.

Threat model. The *instructor* holds the private key, kept outside the repository in a 0600 file,
and is trusted to sign only grades the grader gave (``om-teach certify`` signs only those that
:mod:`om_teach.grading.eligibility` accepts). The *student* holds the certificate and may
edit it at will. The *verifier* (an employer, say) holds the public key, which must reach them
over a channel they trust: the certificate's ``signer_key_sha256`` tells which key signed, not
whether to trust it. The verifier learns everything in the certificate (student id, exam, score,
date, course version) and the sha256 of the submission, which commits to it without revealing
it. A certificate is meant to be shown, so replay is no attack; revocation is not covered.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import math
import numbers
import os
import re
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "om-teach/certificate/1"
_TEXTS = ("student_id", "exam_id", "exam_title", "course_version")
_RESULT = ("score", "max_score", "issued", "submission_sha256")
FIELDS = ("format", *_TEXTS, *_RESULT, "signer_key_sha256", "signature")
KEY_FILE = "signing-key.pem"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class CertificateError(ValueError):
    """A certificate is malformed, altered, or not signed by the given key."""


def canonical(fields: dict[str, Any]) -> bytes:
    """The canonical JSON of ``fields``: sorted keys, compact, UTF-8; the same bytes for the same
    values whatever the dict's insertion order."""
    text = json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """The sha256 of the raw 32-byte public key, in hex: which key signed a certificate."""
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()


def default_key_path() -> Path:
    """``$OM_TEACH_HOME/signing-key.pem``, else ``~/.config/om-teach/signing-key.pem``."""
    home = os.environ.get("OM_TEACH_HOME")
    return (Path(home) if home else Path.home() / ".config" / "om-teach") / KEY_FILE


def init_key(path: Path | None = None, *, force: bool = False) -> Path:
    """Make a new signing key: the private key as unencrypted PKCS#8 PEM in ``path`` (mode 0600
    from creation), the public key as one line of base64 of its raw 32 bytes beside it in
    ``<path stem>.pub``. Returns ``path``."""
    path = (Path(path) if path is not None else default_key_path()).expanduser().resolve()
    for folder in path.parents:
        if (folder / ".git").exists() and (folder / "course" / "syllabus.toml").is_file():
            raise ValueError(
                f"{path} is inside the om-teach checkout {folder}: keep the signing key outside "
                "the repository (default ~/.config/om-teach, or set OM_TEACH_HOME)"
            )
    if path.exists() and not force:
        raise FileExistsError(
            f"{path} already holds a signing key; pass force=True (--force) to replace it, after "
            "which certificates signed with the old key verify only against the old public key"
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if force:
        path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public = base64.b64encode(key.public_key().public_bytes_raw()).decode("ascii")
    path.with_suffix(".pub").write_text(public + "\n", encoding="ascii")
    return path


def load_signing_key(path: Path | None = None) -> Ed25519PrivateKey:
    """The private key made by :func:`init_key`; refused when others may read its file."""
    path = Path(path) if path is not None else default_key_path()
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} has mode {mode:04o}: a signing key must be 0600")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def issue(
    *,
    student_id: str,
    exam_id: str,
    exam_title: str,
    score: float,
    max_score: float,
    submission_sha256: str,
    course_version: str,
    issued: datetime.date | str,
    signing_key: Ed25519PrivateKey,
) -> dict[str, Any]:
    """A signed certificate that ``student_id`` scored ``score`` of ``max_score`` on the exam."""
    texts = dict(zip(_TEXTS, (student_id, exam_id, exam_title, course_version), strict=True))
    for name, value in texts.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    if not isinstance(submission_sha256, str) or not _SHA256.fullmatch(submission_sha256):
        raise ValueError(f"submission_sha256 is not lowercase hex sha256: {submission_sha256!r}")
    try:  # str() of a datetime has a time part, which fromisoformat refuses for a date
        day = datetime.date.fromisoformat(str(issued))
    except ValueError:
        raise ValueError(f"issued must be an ISO date like 2026-11-23, got {issued!r}") from None
    if not all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in (score, max_score)):
        raise TypeError(f"score and max_score must be numbers, got {score!r} and {max_score!r}")
    score, max_score = float(score), float(max_score)
    if not (math.isfinite(max_score) and max_score > 0 and 0 <= score <= max_score):
        raise ValueError(f"need 0 <= score <= max_score, max_score > 0: {score}/{max_score}")
    if not isinstance(signing_key, Ed25519PrivateKey):
        raise TypeError(f"signing_key must be an Ed25519PrivateKey, got {type(signing_key)}")
    fields = dict(
        texts,
        format=FORMAT,
        score=score,
        max_score=max_score,
        issued=day.isoformat(),
        submission_sha256=submission_sha256,
        signer_key_sha256=fingerprint(signing_key.public_key()),
    )
    signature = signing_key.sign(canonical(fields))
    return dict(fields, signature=base64.b64encode(signature).decode("ascii"))


def save(certificate: dict[str, Any], path: Path | str) -> Path:
    """Write ``certificate`` to ``path`` as its canonical JSON."""
    Path(path).write_bytes(canonical(certificate))
    return Path(path)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise CertificateError("not a certificate: a field appears twice")
    return dict(pairs)


def verify(certificate: bytes | Path | str, public_key: Path | str) -> dict[str, Any]:
    """The certificate's fields if it is well formed and signed by the key in the file
    ``public_key`` (as :func:`init_key` writes it), else :class:`CertificateError` saying what is
    wrong. ``certificate`` is the certificate's bytes or the path of its file."""
    data = certificate if isinstance(certificate, bytes) else Path(certificate).read_bytes()
    try:
        fields = json.loads(data, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CertificateError(f"not a certificate: not UTF-8 JSON ({err})") from None
    if not isinstance(fields, dict):
        raise CertificateError(f"not a certificate: a JSON {type(fields).__name__}, not an object")
    if "format" in fields and fields["format"] != FORMAT:
        raise CertificateError(f"unknown certificate format {fields['format']!r}, want {FORMAT!r}")
    missing = [f for f in FIELDS if f not in fields]
    extra = sorted(set(fields) - set(FIELDS))
    if missing or extra:
        raise CertificateError(f"not a certificate: missing fields {missing}, unknown {extra}")
    try:
        raw = base64.b64decode(Path(public_key).read_bytes().strip(), validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise CertificateError(f"{public_key} is not a public key from init-key") from None
    if fields["signer_key_sha256"] != fingerprint(key):
        raise CertificateError(
            f"signed by a different key: the certificate names {fields['signer_key_sha256']!r}, "
            f"{public_key} is {fingerprint(key)}"
        )
    try:
        signature = base64.b64decode(fields["signature"], validate=True)
        key.verify(signature, canonical({k: v for k, v in fields.items() if k != "signature"}))
    except (TypeError, ValueError, InvalidSignature):
        raise CertificateError("bad signature: the certificate was altered after signing") from None
    return fields


def format_verified(fields: dict[str, Any]) -> str:
    """One line for a person: who passed what, with what score, when, on which course version."""
    return (
        f"valid: {fields['student_id']} passed {fields['exam_id']} with "
        f"{fields['score']:g}/{fields['max_score']:g} on {fields['issued']}, "
        f"course {fields['course_version']}"
    )
