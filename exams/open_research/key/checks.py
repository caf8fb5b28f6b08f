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
            key = str(rng.choice([*workers, "stranger"]))
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


# q5 -----------------------------------------------------------------------------------------


def _new_ids(rng: np.random.Generator, count: int, taken=()) -> list[int]:
    """``count`` distinct client ids from 1 to 99 outside ``taken``, in a random order."""
    pool = sorted(set(range(1, 100)) - set(taken))
    return [int(i) for i in rng.choice(pool, size=count, replace=False)]


def _some(rng: np.random.Generator, ids, count: int) -> list[int]:
    """``count`` of ``ids``, in a random order."""
    return [int(i) for i in rng.permutation(sorted(ids))[:count]]


def _shuffled(rng: np.random.Generator, *groups) -> list[int]:
    return [int(i) for i in rng.permutation([i for group in groups for i in group])]


def _secagg_rounds(rng: np.random.Generator, n1: int, n2: int, n3: int):
    """U1, U2 within U1 and U3 within U2, of the sizes given, each in a random order."""
    u1 = _new_ids(rng, n1)
    u2 = _some(rng, u1, n2)
    return u1, u2, _some(rng, u2, n3)


def cases_q5_unmask_plan(rng: np.random.Generator) -> list[list]:
    """Rounds at and one below the threshold; unmask messages repeated, from strangers and from
    clients that dropped; U2 or U3 holding a client that the round before lacks, before and after
    a short round; earlier requests consistent with the new one, listing one of its survivors
    as dropped or a dropped client as a survivor, or one client on both sides."""
    cases = []

    def threshold() -> int:
        return int(rng.integers(2, 5))

    # Exactly t clients of U3 answer, one of them twice: counted once, t is enough.
    t = threshold()
    u1, u2, u3 = _secagg_rounds(rng, t + 3, t + 2, t + int(rng.integers(0, 2)))
    answers = _some(rng, u3, t)
    cases.append([t, u1, u2, u3, _shuffled(rng, answers, answers[:1]), None])

    # One below t, padded by a repeat, a dropped client come late and a stranger.
    t = threshold()
    u1, u2, u3 = _secagg_rounds(rng, t + 3, t + 2, t + 1)
    answers = _some(rng, u3, t - 1)
    late = [i for i in u2 if i not in u3][:1]
    cases.append(
        [t, u1, u2, u3, _shuffled(rng, answers, answers[:1], late, _new_ids(rng, 1, u1)), None]
    )

    # Enough clients, among messages from one that only advertised keys and one never seen; the
    # earlier request is this one, sent again, so its client answers it.
    t = threshold()
    u1, u2, u3 = _secagg_rounds(rng, t + 4, t + 2, t + int(rng.integers(0, 3)))
    answers = _some(rng, u3, t + int(rng.integers(0, len(u3) - t + 1)))
    keys_only = [i for i in u1 if i not in u2][:1]
    earlier = {"client": answers[0], "survivors": sorted(u3), "dropped": sorted(set(u2) - set(u3))}
    cases.append([t, u1, u2, u3, _shuffled(rng, answers, keys_only, _new_ids(rng, 1, u1)), earlier])

    # Malformed: U3 holds a client that sent no shares. No request is sent, so the client of a
    # conflicting earlier request has nothing to refuse.
    t = threshold()
    u1, u2, u3 = _secagg_rounds(rng, t + 3, t + 1, t)
    client, slow = u3[0], u3[1]
    earlier = {"client": client, "survivors": sorted(set(u3) - {slow}), "dropped": [slow]}
    u3 = _shuffled(rng, u3, [i for i in u1 if i not in u2][:1])
    cases.append([t, u1, u2, u3, _shuffled(rng, u3), earlier])

    # Too few at round 1, 2 or 3, the rounds before it at exactly t.
    t = threshold()
    short = int(rng.integers(1, 4))
    u1, u2, u3 = _secagg_rounds(rng, *(t - 1 if r >= short else t for r in (1, 2, 3)))
    cases.append([t, u1, u2, u3, _shuffled(rng, u3, u3[:1]), None])

    # The rounds' order: U2 holding a stranger aborts before U3 is counted short; U1 counted
    # short aborts before U3 is found holding a stranger.
    t = threshold()
    u1, u2, u3 = _secagg_rounds(rng, t + 2, t + 1, t - 1)
    u2 = _shuffled(rng, u2, _new_ids(rng, 1, u1))
    cases.append([t, u1, u2, u3, _shuffled(rng, u3), None])
    t = threshold()
    u1, u2, u3 = _secagg_rounds(rng, t - 1, t - 1, t - 1)
    u3 = _shuffled(rng, u3, _new_ids(rng, 1, u1))
    cases.append([t, u1, u2, u3, _shuffled(rng, u3), None])

    # A slow client first declared dropped: the client that answered that request refuses this
    # one, which lists the slow client as a survivor, and its abort does not count; t others do.
    t = threshold()
    u1, u2, u3 = _secagg_rounds(rng, t + 3, t + 3, t + 2)
    client, slow = u3[0], u3[1]
    earlier = {
        "client": client,
        "survivors": sorted(set(u3) - {slow}),
        "dropped": sorted((set(u2) - set(u3)) | {slow}),
    }
    others = _some(rng, [i for i in u3 if i != client], t)
    cases.append([t, u1, u2, u3, _shuffled(rng, others, [client]), earlier])

    # The refusal leaves one too few: the earlier request listed a dropped client as a survivor,
    # or one client on both sides.
    t = threshold()
    u1, u2, u3 = _secagg_rounds(rng, t + 2, t + 2, t + 1)
    client = u3[0]
    if rng.random() < 0.5:
        earlier = {"client": client, "survivors": sorted(u2), "dropped": []}
    else:
        dropped = sorted((set(u2) - set(u3)) | {u3[1]})
        earlier = {"client": client, "survivors": sorted(u3), "dropped": dropped}
    others = _some(rng, [i for i in u3 if i != client], t - 1)
    cases.append([t, u1, u2, u3, _shuffled(rng, others, [client], [client]), earlier])

    # At random: rounds that shrink, noise among the messages, an earlier request or none.
    for _ in range(2):
        t = threshold()
        n1 = int(rng.integers(t, t + 5))
        n2 = int(rng.integers(t, n1 + 1))
        n3 = int(rng.integers(t, n2 + 1))
        u1, u2, u3 = _secagg_rounds(rng, n1, n2, n3)
        answers = _some(rng, u3, int(rng.integers(t - 1, n3 + 1)))
        outside = [i for i in u1 if i not in u3] + _new_ids(rng, 2, u1)
        noise = _some(rng, outside, int(rng.integers(0, 3)))
        responses = _shuffled(rng, answers, noise, answers[: int(rng.integers(0, 2))])
        earlier = None
        if rng.random() < 2 / 3:
            survivors, dropped = set(u3), set(u2) - set(u3)
            if rng.random() < 0.5:  # one client of U2 on the other side
                moved = int(rng.choice(sorted(u2)))
                survivors, dropped = survivors ^ {moved}, dropped ^ {moved}
            client = int(rng.choice(sorted(u3)))
            earlier = {"client": client, "survivors": sorted(survivors), "dropped": sorted(dropped)}
        cases.append([t, u1, u2, u3, responses, earlier])
    return cases


def reference_q5_unmask_plan(t, u1, u2, u3, responses, earlier):
    plan = {"abort": None, "request": None, "counted": [], "client_refuses": False}
    for ids, before in ((u1, None), (u2, u1), (u3, u2)):
        if before is not None and not set(ids) <= set(before):
            return {**plan, "abort": "malformed"}
        if len(ids) < t:
            return {**plan, "abort": "too few"}
    survivors, dropped = sorted(u3), sorted(set(u2) - set(u3))
    plan["request"] = {"survivors": survivors, "dropped": dropped}
    refuser = None
    if earlier is not None:
        b_shares = set(survivors) | set(earlier["survivors"])
        sk_shares = set(dropped) | set(earlier["dropped"])
        if b_shares & sk_shares:
            plan["client_refuses"], refuser = True, earlier["client"]
    plan["counted"] = sorted((set(responses) & set(u3)) - {refuser})
    if len(plan["counted"]) < t:
        plan["abort"] = "too few"
    return plan
