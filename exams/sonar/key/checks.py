"""Hidden checks for the Sonar exam (a SAMPLE key: real instructors keep theirs private).

For each question ``q`` of ``exam.toml``: ``cases_q(rng)`` draws the hidden inputs (a list of
JSON-safe argument lists) from the student's generator, and ``reference_q(*args)`` answers
them. Only numpy and the standard library are imported, so the key does not depend on the
library whose shortcuts the questions are built to defeat.
"""

from __future__ import annotations

import base64
import hashlib
import math

import numpy as np

TOLERANCE = {"q2_ridge_gradient": 1e-9, "q3_unpack": 1e-9}

# q1: errors are fixed point, scaled by 10**6 as on chain; bounties in wei, past 2**64.
ERROR_SCALE = 10**6
MAX_CONTRIBUTORS = 64

# q4: the RDP orders a case may search, and the deltas.
ORDERS = (1.25, 1.5, 1.75, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 128, 256)
DELTAS = (1e-5, 1e-6, 1e-7, 1e-8)
MARGIN = 1e-6
"""A q4 case is redrawn when a round count's epsilon lies within this of the budget, so that
no sound float computation of the classical bound can land on the other side."""

# q5: the multicodec prefix of a CIDv1 of raw bytes: version 1, codec raw, sha2-256, 32 bytes.
CIDV1_RAW_SHA2_256 = bytes([0x01, 0x55, 0x12, 0x20])


def _below(rng: np.random.Generator, bound: int) -> int:
    """A uniform int in [0, bound), for bounds past int64."""
    return int.from_bytes(rng.bytes((bound.bit_length() + 71) // 8), "big") % bound


# q1 ---------------------------------------------------------------------------------------


def cases_q1_payout(rng: np.random.Generator) -> list[list]:
    """Five rounds of a model whose best error already improved on the initial one: a round
    that improves (paid from the best error, not the initial), one that passes the target
    (floored there), one that does not improve (new error equal to the best), one after the
    best passed the target (nothing left to pay), and one drawn at random. Bounties from
    10**15 to 10**22 wei; 1 to 64 contributors."""
    cases = []
    for kind in range(5):
        initial = int(rng.integers(200_000, 3_000_000))
        target = int(initial * rng.uniform(0.05, 0.6))
        bounty = 10**15 + _below(rng, 10**22 - 10**15)
        contributors = 1 if kind == 4 else int(rng.integers(2, MAX_CONTRIBUTORS + 1))
        best = int(rng.integers(target + 2, initial))
        if kind == 0:
            new = int(rng.integers(target + 1, best))
        elif kind == 1:
            new = int(rng.integers(0, target))
        elif kind == 2:
            new = best
        elif kind == 3:
            best = int(rng.integers(1, target))
            new = int(rng.integers(0, best))
        else:
            best = int(rng.integers(target, initial + 1))
            new = int(rng.integers(0, initial + 1))
        cases.append([bounty, initial, target, best, new, contributors])
    return cases


def reference_q1_payout(
    bounty: int,
    initial_error: int,
    target_error: int,
    best_error: int,
    new_error: int,
    contributors: int,
) -> list[int]:
    """ModelRepository._owed, then pay_round's equal split: both divisions round down."""
    floor_before = max(best_error, target_error)
    floor_after = max(new_error, target_error)
    owed = 0
    if floor_after < floor_before:
        owed = bounty * (floor_before - floor_after) // (initial_error - target_error)
    return [owed // contributors] * contributors


# q2 ---------------------------------------------------------------------------------------


def cases_q2_ridge_gradient(rng: np.random.Generator) -> list[list]:
    """3 to 12 rows of 1 to 5 features, a model with a non-zero bias, lam in [0.01, 2]; the
    last case has a single feature and a single row."""
    cases = []
    for case in range(4):
        rows, features = (1, 1) if case == 3 else (int(v) for v in rng.integers((3, 1), (13, 6)))
        X = rng.normal(0.0, 2.0, (rows, features)).tolist()
        y = rng.normal(0.0, 3.0, rows).tolist()
        w = rng.normal(0.0, 1.0, features).tolist()
        b = float(rng.choice([-1, 1]) * rng.uniform(0.5, 3.0))
        lam = float(rng.uniform(0.01, 2.0))
        cases.append([X, y, w, b, lam])
    return cases


def reference_q2_ridge_gradient(
    X: list[list[float]], y: list[float], w: list[float], b: float, lam: float
) -> list[float]:
    """[2/n X^T r + 2 lam w, 2 mean(r)] with r = X w + b - y; the bias is not penalized."""
    X, y, w = np.asarray(X, dtype=float), np.asarray(y, dtype=float), np.asarray(w, dtype=float)
    residual = X @ w + b - y
    return [*(2.0 * X.T @ residual / len(y) + 2.0 * lam * w).tolist(), float(2.0 * residual.mean())]


# q3 ---------------------------------------------------------------------------------------


def packed_sum(
    rng: np.random.Generator, *, slots: int, count: int, max_summands: int, extreme: int = 0
) -> tuple[list, list[float]]:
    """A decrypted sum of ``count`` packed encryptions under a layout sized for
    ``max_summands``, as the module's PackingLayout builds it; returns the question's
    arguments and the floats that were packed (summed). ``extreme`` = -1 or 1 fills every
    slot with -max_abs or +max_abs."""
    precision = float(10 ** rng.uniform(-6, -3))
    max_abs = float(rng.uniform(0.5, 10.0))
    step = precision / max_summands
    offset = math.ceil(max_abs / step)
    slot_bits = (2 * offset * max_summands).bit_length()
    x = rng.uniform(-max_abs, max_abs, (count, slots))
    if extreme:
        x[:] = extreme * max_abs
    quanta = np.rint(x / step).astype(np.int64) + offset
    plaintext = 0
    for value in reversed([int(v) for v in quanta.sum(axis=0)]):
        plaintext = (plaintext << slot_bits) | value
    return [plaintext, slots, slot_bits, offset, count, step], x.sum(axis=0).tolist()


def cases_q3_unpack(rng: np.random.Generator) -> list[list]:
    """Sums of 1 to 8 encryptions of 3 to 20 values each, under layouts sized for at least
    twice as many summands (so a layout rebuilt from ``count`` has narrower slots); one case
    with every value at -max_abs (slots of 0), one with every value at +max_abs."""
    cases = []
    for case in range(4):
        count = int(rng.integers(1, 9))
        max_summands = int(rng.integers(2 * count, 4 * count + 3))
        extreme = {1: -1, 2: 1}.get(case, 0)
        slots = int(rng.integers(3, 21))
        args, _ = packed_sum(
            rng, slots=slots, count=count, max_summands=max_summands, extreme=extreme
        )
        cases.append(args)
    return cases


def reference_q3_unpack(
    plaintext: int, slots: int, slot_bits: int, offset: int, count: int, step: float
) -> list[float]:
    """Slot i is bits [i b, (i + 1) b), slot 0 lowest; each is (slot - count offset) step."""
    mask = (1 << slot_bits) - 1
    return [
        float(((plaintext >> (i * slot_bits)) & mask) - count * offset) * step for i in range(slots)
    ]


# q4 ---------------------------------------------------------------------------------------


def classical_epsilon(
    sigma: float, rounds: int, delta: float, orders: list[float] | tuple[float, ...]
) -> float:
    """min over alpha of rounds alpha / (2 sigma²) + log(1/delta) / (alpha - 1)."""
    return min(rounds * a / (2 * sigma**2) + math.log(1 / delta) / (a - 1) for a in orders)


def cases_q4_rounds_within_budget(rng: np.random.Generator) -> list[list]:
    """sigma in [0.8, 6], budgets 1 to 12, delta 1e-5 to 1e-8, 5 to 12 orders; the last
    case has sigma in [0.3, 0.5] and a budget that even one round exceeds."""
    cases = []
    while len(cases) < 4:
        last = len(cases) == 3
        sigma = round(float(rng.uniform(0.3, 0.5) if last else rng.uniform(0.8, 6.0)), 3)
        budget = round(float(rng.uniform(0.5, 2.0) if last else rng.uniform(1.0, 12.0)), 3)
        delta = float(rng.choice(DELTAS))
        size = int(rng.integers(5, 13))
        orders = [ORDERS[int(i)] for i in sorted(rng.permutation(len(ORDERS))[:size])]
        rounds = reference_q4_rounds_within_budget(sigma, budget, delta, orders)
        if last != (rounds == 0):
            continue
        near = [classical_epsilon(sigma, r, delta, orders) for r in (rounds, rounds + 1) if r]
        if all(abs(e - budget) > MARGIN for e in near):
            cases.append([sigma, budget, delta, orders])
    return cases


def reference_q4_rounds_within_budget(
    sigma: float, epsilon_budget: float, delta: float, orders: list[float]
) -> int:
    """The largest R with classical_epsilon(R) <= budget: per order, the largest R that
    order allows, then the best order; checked against the definition."""
    log_term = math.log(1 / delta)
    rounds = 0
    for a in orders:
        room = epsilon_budget - log_term / (a - 1)
        if room > 0:
            rounds = max(rounds, math.floor(room * 2 * sigma**2 / a))
    while rounds and classical_epsilon(sigma, rounds, delta, orders) > epsilon_budget:
        rounds -= 1
    while classical_epsilon(sigma, rounds + 1, delta, orders) <= epsilon_budget:
        rounds += 1
    return rounds


# q5 ---------------------------------------------------------------------------------------


def cases_q5_cid_v1_raw(rng: np.random.Generator) -> list[list]:
    """Empty data, one byte, and random data of 2 to 4096 bytes, as lower-case hex."""
    lengths = [0, 1, *(int(v) for v in rng.integers(2, 4097, 3))]
    return [[rng.bytes(length).hex()] for length in lengths]


def reference_q5_cid_v1_raw(data_hex: str) -> str:
    """ "b" + base32 (RFC 4648, lower case, unpadded) of 0x01 0x55 0x12 0x20 + sha2-256."""
    digest = hashlib.sha256(bytes.fromhex(data_hex)).digest()
    return "b" + base64.b32encode(CIDV1_RAW_SHA2_256 + digest).decode().lower().rstrip("=")
