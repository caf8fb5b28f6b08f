"""Hidden checks for the open research exam (a SAMPLE key: real instructors keep theirs private).

For each question ``q`` of ``exam.toml``: ``cases_q(rng)`` draws the hidden inputs (a list of
JSON-safe argument lists) from the student's generator, and ``reference_q(*args)`` answers
them. Only numpy and the standard library are imported, so the key does not depend on the
library whose shortcuts the questions are built to defeat.
"""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np

SCOPES = ("read", "upload", "train", "admin")
TOLERANCE = {"q2_retry_delays": 1e-9}
TRANSIENT = ("error", 502, 503, 504)
FINAL = (200, 201, 400, 401, 403, 404, 413, 422, 426, 500)


def _token(rng: np.random.Generator) -> str:
    return "omt_" + rng.bytes(24).hex()


# q1 -----------------------------------------------------------------------------------------


def cases_q1_token_scopes(rng: np.random.Generator) -> list[list]:
    """Three to five issued tokens under salted hashes; headers that present one of them (in
    any case of "Bearer", padded with spaces), a token never issued, another scheme, none."""
    tokens = [_token(rng) for _ in range(int(rng.integers(3, 6)))]
    stored = []
    for i, token in enumerate(tokens):
        salt = rng.bytes(16)
        count = int(rng.integers(1, 3))
        scopes = sorted({str(s) for s in rng.choice(SCOPES, size=count)}) if i else ["admin"]
        stored.append(
            {
                "salt": salt.hex(),
                "sha256": hashlib.sha256(salt + token.encode()).hexdigest(),
                "scopes": scopes,
            }
        )
    headers = [
        f"Bearer {tokens[0]}",
        f"bearer   {tokens[1]}  ",
        f"BEARER {tokens[-1]}",
        f"Bearer {_token(rng)}",
        f"Basic {tokens[2]}",
        f"Bearer{tokens[2]}",
        None,
    ]
    return [[h, stored] for h in headers]


def reference_q1_token_scopes(header, stored):
    if header is None:
        return None
    scheme, space, token = header.partition(" ")
    if not space or scheme.lower() != "bearer":
        return None
    token = token.strip()
    for entry in stored:
        digest = hashlib.sha256(bytes.fromhex(entry["salt"]) + token.encode()).hexdigest()
        if digest == entry["sha256"]:
            return sorted(SCOPES) if "admin" in entry["scopes"] else sorted(entry["scopes"])
    return None


# q2 -----------------------------------------------------------------------------------------


def cases_q2_retry_delays(rng: np.random.Generator) -> list[list]:
    """Runs of transient outcomes ending in a final status, or running past the retries; the
    cap binds in every case with enough retries."""
    cases = []
    for case in range(5):
        retries = int(rng.integers(3, 7))
        run = int(rng.integers(0, retries + 3)) if case else retries + 1
        outcomes = [TRANSIENT[int(rng.integers(len(TRANSIENT)))] for _ in range(run)]
        outcomes.append(int(rng.choice(FINAL)))
        outcomes += [503] * 3
        base = float(rng.choice([0.05, 0.1, 0.25]))
        cap = base * float(rng.choice([1.5, 2.5, 3]))
        cases.append([outcomes, base, cap, retries])
    return cases


def reference_q2_retry_delays(outcomes, base, cap, retries):
    delays = []
    for k, outcome in enumerate(outcomes):
        if outcome not in TRANSIENT or k == retries:
            return [delays, outcome]
        delays.append(min(cap, base * 2**k))
    raise ValueError("the outcomes ran out")


# q3 -----------------------------------------------------------------------------------------


def cases_q3_header_problems(rng: np.random.Generator) -> list[list]:
    """Headers (no data follows them) of uploads for a small network: some right, some with
    tensors missing, extra, of another dtype or shape, and metadata to skip."""
    expected = {"0.weight": [32, 64], "0.bias": [32], "2.weight": [10, 32], "2.bias": [10]}
    cases = []
    for case in range(5):
        header = {
            name: {"dtype": "F32", "shape": list(shape), "data_offsets": [0, 0]}
            for name, shape in expected.items()
        }
        names = sorted(header)
        if case >= 1:
            del header[names[int(rng.integers(len(names)))]]
        if case >= 2:
            header[f"extra.{int(rng.integers(100))}"] = {
                "dtype": "F32",
                "shape": [3],
                "data_offsets": [0, 0],
            }
        present = [n for n in names if n in header]
        if case >= 3:
            header[present[0]]["dtype"] = str(rng.choice(["F64", "F16", "I64"]))
        if case >= 1:
            header[present[-1]]["shape"] = [int(rng.integers(1, 9))] + header[present[-1]]["shape"]
        header["__metadata__"] = {"format": "pt"}
        raw = json.dumps(header).encode()
        cases.append([(struct.pack("<Q", len(raw)) + raw).hex(), expected])
    return cases


def reference_q3_header_problems(header_hex, expected):
    raw = bytes.fromhex(header_hex)
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    header.pop("__metadata__", None)
    wrong = [
        n
        for n in header
        if n in expected
        and (header[n]["dtype"] != "F32" or list(header[n]["shape"]) != list(expected[n]))
    ]
    return {
        "missing": sorted(set(expected) - set(header)),
        "unexpected": sorted(set(header) - set(expected)),
        "wrong": sorted(wrong),
    }


# q4 -----------------------------------------------------------------------------------------


def cases_q4_cycle_outcome(rng: np.random.Generator) -> list[list]:
    """Event streams with requests past capacity, repeated requests, replayed, foreign and late
    reports, ending before, at or after the deadline."""
    cases = []
    for case in range(5):
        workers = [f"w{i}" for i in range(int(rng.integers(3, 9)))]
        max_workers = int(rng.integers(2, len(workers) + 1))
        min_reports = int(rng.integers(1, max_workers + 1))
        deadline = 10.0
        events = []
        for _ in range(int(rng.integers(6, 16))):
            time = round(float(rng.uniform(0, 13 if case % 2 else 9.5)), 2)
            kind = "request" if rng.random() < 0.45 else "report"
            key = str(rng.choice(workers + ["stranger"]))
            events.append([time, kind, key])
        events.sort(key=lambda e: e[0])
        cases.append([events, min_reports, max_workers, deadline])
    return cases


def reference_q4_cycle_outcome(events, min_reports, max_workers, deadline):
    issued, counted, refused, status = [], [], 0, "open"
    for time, kind, key in events:
        if status == "open" and time >= deadline:
            status = "closed" if len(counted) >= min_reports else "failed"
        if kind == "request":
            if status == "open" and len(issued) < max_workers and key not in issued:
                issued.append(key)
        elif status != "open" or key not in issued or key in counted:
            refused += 1
        else:
            counted.append(key)
            if len(counted) >= max_workers:
                status = "closed"
    return {"status": status, "counted": sorted(counted), "refused": refused}
