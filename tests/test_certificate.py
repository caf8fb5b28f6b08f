"""Certificates: issue, save and verify round trip; every edit, a flipped bit and a foreign key
are refused; the signing key stays private and outside the repository."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from om_teach.grading.certificate import (
    FIELDS,
    CertificateError,
    canonical,
    fingerprint,
    format_verified,
    init_key,
    issue,
    load_signing_key,
    save,
    verify,
)

ROOT = Path(__file__).resolve().parent.parent
SUBMISSION = hashlib.sha256(b"a submitted notebook").hexdigest()
HEAVY = ("torch", "numpy", "pandas", "nbformat", "papermill", "jupyter_client")


@pytest.fixture
def key_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OM_TEACH_HOME", str(tmp_path / "home"))
    return init_key()


def _issue(signing_key: Ed25519PrivateKey, **changes) -> dict:
    arguments = dict(
        student_id="ada",
        exam_id="toolbox",
        exam_title="The privacy toolbox",
        score=87,
        max_score=100,
        submission_sha256=SUBMISSION,
        course_version="0.1.0",
        issued=datetime.date(2026, 11, 23),
        signing_key=signing_key,
    )
    return issue(**(arguments | changes))


def test_round_trip(key_path: Path, tmp_path: Path):
    """A certificate issued, saved and read back verifies, from its file and from its bytes."""
    certificate = _issue(load_signing_key(key_path))
    path = save(certificate, tmp_path / "ada.json")
    public = key_path.with_suffix(".pub")
    assert verify(path, public) == certificate == verify(path.read_bytes(), public)
    assert path.read_bytes() == canonical(certificate)
    expected = "valid: ada passed toolbox with 87/100 on 2026-11-23, course 0.1.0"
    assert format_verified(verify(str(path), str(public))) == expected


def test_known_answer_payload_and_signature():
    """The signed bytes are exactly the canonical JSON below, and Ed25519 signs them over."""
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    certificate = _issue(key, student_id="zoë", issued="2026-11-23", score=87.5)
    raw_public = key.public_key().public_bytes_raw()
    signer = hashlib.sha256(raw_public).hexdigest()
    payload = (
        '{"course_version":"0.1.0","exam_id":"toolbox","exam_title":"The privacy toolbox",'
        '"format":"om-teach/certificate/1","issued":"2026-11-23","max_score":100.0,"score":87.5,'
        f'"signer_key_sha256":"{signer}","student_id":"zoë","submission_sha256":"{SUBMISSION}"}}'
    ).encode()
    unsigned = {k: v for k, v in certificate.items() if k != "signature"}
    assert canonical(unsigned) == payload and b"zo\xc3\xab" in payload
    key.public_key().verify(base64.b64decode(certificate["signature"]), payload)
    assert fingerprint(key.public_key()) == signer
    assert canonical(_issue(key, student_id="zoë", score=87.5)) == canonical(certificate)


def test_canonical_form_ignores_insertion_order_and_whitespace(key_path: Path):
    """Reordered keys give the same bytes; a re-indented certificate still verifies."""
    certificate = _issue(load_signing_key(key_path))
    reordered = dict(reversed(list(certificate.items())))
    assert list(reordered) != list(certificate)
    assert canonical(reordered) == canonical(certificate)
    pretty = json.dumps(reordered, indent=2, ensure_ascii=True).encode()
    assert verify(pretty, key_path.with_suffix(".pub")) == certificate


EDITS = {
    "format": ("om-teach/certificate/2", "unknown certificate format"),
    "student_id": ("eve", "altered"),
    "exam_id": ("final", "altered"),
    "exam_title": ("An easier exam", "altered"),
    "course_version": ("0.2.0", "altered"),
    "score": (100.0, "altered"),
    "max_score": (87.0, "altered"),
    "issued": ("2026-11-24", "altered"),
    "submission_sha256": (hashlib.sha256(b"another notebook").hexdigest(), "altered"),
    "signer_key_sha256": ("0" * 64, "signed by a different key"),
}


def test_edits_cover_every_signed_field():
    """Each field but the signature has an edit below, so a new field cannot go untested."""
    assert set(EDITS) == set(FIELDS) - {"signature"}


@pytest.mark.parametrize("field", sorted(EDITS))
def test_every_single_field_edit_is_refused(key_path: Path, field: str):
    """Changing any one field's value makes verification fail with a message naming why."""
    certificate = _issue(load_signing_key(key_path))
    value, message = EDITS[field]
    assert certificate[field] != value
    with pytest.raises(CertificateError, match=message):
        verify(canonical(certificate | {field: value}), key_path.with_suffix(".pub"))


@pytest.mark.parametrize("value", [87, "87.0", 87.00000000000001])
def test_a_change_of_type_or_last_digit_is_an_edit(key_path: Path, value):
    """The score 87.0 written as the int 87, a string, or one ulp off does not verify."""
    certificate = _issue(load_signing_key(key_path))
    with pytest.raises(CertificateError, match="altered"):
        verify(canonical(certificate | {"score": value}), key_path.with_suffix(".pub"))


def test_every_flipped_signature_bit_is_refused(key_path: Path):
    """Each of the signature's 512 bits, flipped alone, breaks verification."""
    certificate = _issue(load_signing_key(key_path))
    signature = base64.b64decode(certificate["signature"])
    for bit in range(8 * len(signature)):
        flipped = bytearray(signature)
        flipped[bit // 8] ^= 1 << (bit % 8)
        edited = certificate | {"signature": base64.b64encode(flipped).decode()}
        with pytest.raises(CertificateError, match="bad signature"):
            verify(canonical(edited), key_path.with_suffix(".pub"))
    with pytest.raises(CertificateError, match="bad signature"):
        verify(canonical(certificate | {"signature": "not base64!"}), key_path.with_suffix(".pub"))


def test_a_different_key_is_named(key_path: Path, tmp_path: Path):
    """Another key is named as such; copying the genuine signer field forges nothing."""
    genuine = _issue(load_signing_key(key_path))
    other = init_key(tmp_path / "other" / "signing-key.pem")
    with pytest.raises(CertificateError, match="signed by a different key"):
        verify(canonical(genuine), other.with_suffix(".pub"))
    forged = _issue(load_signing_key(other), score=100)
    forged["signer_key_sha256"] = genuine["signer_key_sha256"]
    with pytest.raises(CertificateError, match="bad signature"):
        verify(canonical(forged), key_path.with_suffix(".pub"))


def test_key_file_is_0600_from_creation_and_outside_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Under umask 0 and with chmod disabled the key is 0600, in ~/.config, not in the repo."""

    def no_chmod(*args, **kwargs):
        raise AssertionError("the key's mode must come from its creation, not a later chmod")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(os, "fchmod", no_chmod)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("OM_TEACH_HOME", raising=False)
    old_umask = os.umask(0)
    try:
        path = init_key()
    finally:
        os.umask(old_umask)
    assert path == tmp_path / "user" / ".config" / "om-teach" / "signing-key.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    assert not path.is_relative_to(ROOT)
    public = base64.b64decode(path.with_suffix(".pub").read_text().strip(), validate=True)
    assert public == load_signing_key(path).public_key().public_bytes_raw()


def test_init_key_refuses_to_overwrite(key_path: Path, tmp_path: Path):
    """A second init-key leaves the key alone; force replaces it, and old certificates then fail."""
    before = key_path.read_bytes()
    old = _issue(load_signing_key(key_path))
    with pytest.raises(FileExistsError, match="force"):
        init_key()
    assert key_path.read_bytes() == before
    assert init_key(force=True) == key_path
    assert key_path.read_bytes() != before and key_path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(CertificateError, match="different key"):
        verify(canonical(old), key_path.with_suffix(".pub"))


def test_init_key_refuses_a_path_in_a_checkout(tmp_path: Path):
    """A key path inside a git checkout of om-teach (a copy, or this one) is refused unwritten."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "course").mkdir()
    (tmp_path / "course" / "syllabus.toml").write_text("")
    with pytest.raises(ValueError, match="outside the repository"):
        init_key(tmp_path / "keys" / "signing-key.pem")
    assert not (tmp_path / "keys").exists()
    if (ROOT / ".git").exists():
        with pytest.raises(ValueError, match="inside the om-teach checkout"):
            init_key(ROOT / "build" / "no-key-here" / "signing-key.pem")
        assert not (ROOT / "build" / "no-key-here").exists()


def test_a_readable_signing_key_is_refused(key_path: Path):
    """A key file others may read is not used to sign."""
    key_path.chmod(0o644)
    with pytest.raises(PermissionError, match="0644"):
        load_signing_key(key_path)


def test_malformed_certificates_get_clear_errors(key_path: Path):
    """Not JSON, not an object, missing, unknown or repeated fields: each is named."""
    public = key_path.with_suffix(".pub")
    certificate = _issue(load_signing_key(key_path))
    for data in (b"not json", b"\xff\xfe", b""):
        with pytest.raises(CertificateError, match="not UTF-8 JSON"):
            verify(data, public)
    with pytest.raises(CertificateError, match="not an object"):
        verify(b"[1, 2]", public)
    for field in FIELDS:
        shorter = {k: v for k, v in certificate.items() if k != field}
        with pytest.raises(CertificateError, match=f"missing fields \\['{field}'\\]"):
            verify(canonical(shorter), public)
    with pytest.raises(CertificateError, match="unknown \\['grade'\\]"):
        verify(canonical(certificate | {"grade": "A"}), public)
    repeated = canonical(certificate)[:-1] + b',"score":100.0}'
    with pytest.raises(CertificateError, match="appears twice"):
        verify(repeated, public)
    with pytest.raises(CertificateError, match="bad signature"):
        verify(canonical(certificate).replace(b"87.0", b"NaN"), public)
    key_path.with_suffix(".pub").write_text("not a key")
    with pytest.raises(CertificateError, match="not a public key"):
        verify(canonical(certificate), public)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"score": 101}, ValueError, "score <= max_score"),
        ({"score": -1}, ValueError, "score <= max_score"),
        ({"max_score": float("nan")}, ValueError, "max_score > 0"),
        ({"score": "87"}, TypeError, "numbers"),
        ({"score": True}, TypeError, "numbers"),
        ({"submission_sha256": "ABC"}, ValueError, "sha256"),
        ({"issued": "23/11/2026"}, ValueError, "ISO date"),
        ({"issued": datetime.datetime(2026, 11, 23, 9)}, ValueError, "ISO date"),
        ({"student_id": " "}, ValueError, "student_id"),
        ({"course_version": None}, ValueError, "course_version"),
    ],
)
def test_issue_refuses_bad_input(change: dict, error: type, message: str):
    """Each bad argument is refused with an error naming it."""
    with pytest.raises(error, match=message):
        _issue(Ed25519PrivateKey.generate(), **change)


def test_issue_refuses_a_public_key():
    """Signing needs the private key; anything else is refused."""
    with pytest.raises(TypeError, match="Ed25519PrivateKey"):
        _issue(Ed25519PrivateKey.generate().public_key())


def test_verification_imports_nothing_heavy():
    """Importing the module loads only the standard library and cryptography, quickly."""
    script = (
        "import sys, time\n"
        "before = set(sys.modules)\n"
        "start = time.perf_counter()\n"
        "import om_teach.grading.certificate\n"
        "seconds = time.perf_counter() - start\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(seconds)\n"
        "print(' '.join(sorted(m for m in new if m not in sys.stdlib_module_names)))\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    seconds, outside, heavy = (result.stdout.split("\n") + [""] * 3)[:3]
    print(f"import om_teach.grading.certificate: {float(seconds) * 1000:.0f} ms")
    assert heavy == ""
    assert {m for m in outside.split() if not m.startswith("_")} <= {"om_teach", "cryptography"}
    assert float(seconds) < 5
