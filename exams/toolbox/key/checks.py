"""Hidden checks for the toolbox exam (a SAMPLE key: real instructors keep theirs private).

For each question ``q`` of ``exam.toml``: ``cases_q(rng)`` draws the hidden inputs (a list of
JSON-safe argument lists) from the student's generator, and ``reference_q(*args)`` answers
them. ``judge_q2_weighted_sum`` replaces equality for Paillier, where any encryption of the
right plaintext is right. Only numpy, gmpy2 and the standard library are imported, so the key
does not depend on the library whose shortcuts the questions are built to defeat.
"""

from __future__ import annotations

import math

import gmpy2
import numpy as np

TOLERANCE = {"q5_rdp_epsilon": 1e-9}

# q1: Shamir fields, from a small prime to the Mersenne primes the library uses.
PRIMES = (7919, 65537, 2**31 - 1, 2**61 - 1, 2**127 - 1)

# q2: the Paillier keys the hidden ciphertexts are under. Their primes are derived from
# PAILLIER_SEED, so every process that loads this key (drawing the cases, judging the answers)
# has them. Change the seed in a private key: anyone who has this file can decrypt.
PAILLIER_SEED = 0x70_0B_0C_5E
PAILLIER_KEYS = 6
PRIME_BITS = 128

# q3: rings Z_m for Beaver products. The first case uses 2^16; the others a modulus of 61 to
# 89 bits that is not a power of two, whose products overflow 64-bit arithmetic.
BEAVER_MODULI = (2**61 - 1, 2**64 - 59, 3**40, 2**89 - 1)

# q5: the RDP orders a case may search.
ORDERS = (1.25, 1.5, 1.75, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 128, 256)


def _below(rng: np.random.Generator, bound: int) -> int:
    """A uniform int in [0, bound), for bounds past int64."""
    return int.from_bytes(rng.bytes((bound.bit_length() + 71) // 8), "big") % bound


# q1 ---------------------------------------------------------------------------------------


def cases_q1_lagrange(rng: np.random.Generator) -> list[list]:
    """A lost Shamir share: t points of a random polynomial over each case's field, and a
    holder x != 0 that is not among them (the last case: any x in the field)."""
    cases = []
    for case in range(4):
        prime = PRIMES[case + int(rng.integers(0, 2))]
        t = int(rng.integers(2, 7))
        holders = [int(h) for h in rng.permutation(np.arange(1, 25))[: t + 1]]
        xs, x = holders[:t], holders[t]
        if case == 3:
            x = 1 + _below(rng, prime - 1)
        coefficients = [_below(rng, prime) for _ in range(t)]
        points = [[xi, _polynomial(coefficients, xi, prime)] for xi in xs]
        cases.append([points, x, prime])
    return cases


def _polynomial(coefficients: list[int], x: int, prime: int) -> int:
    value = 0
    for c in reversed(coefficients):
        value = (value * x + c) % prime
    return value


def reference_q1_lagrange(points: list[list[int]], x: int, prime: int) -> int:
    """f(x) = sum_i y_i prod_{j != i} (x - x_j) / (x_i - x_j) over GF(prime)."""
    total = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                numerator = numerator * (x - xj) % prime
                denominator = denominator * (xi - xj) % prime
        total = (total + yi * numerator * pow(denominator, -1, prime)) % prime
    return total


# q2 ---------------------------------------------------------------------------------------


def _paillier_primes(index: int) -> tuple[int, int]:
    """Two distinct primes whose two top bits are set, so that n = p q has 2 PRIME_BITS bits."""
    rng = np.random.default_rng([PAILLIER_SEED, index])
    top, low = 3 << (PRIME_BITS - 2), 1 << (PRIME_BITS - 2)
    p = q = 0
    while p == q:
        p, q = (int(gmpy2.next_prime(top | _below(rng, low))) for _ in range(2))
    return p, q


_PRIVATE = {p * q: (p, q) for p, q in map(_paillier_primes, range(PAILLIER_KEYS))}
"""n -> (p, q): equal-size primes, so gcd(n, (p-1)(q-1)) = 1 and g = n + 1 is a generator."""


def _encrypt(m: int, r: int, n: int) -> int:
    """Paillier with g = n + 1: (1 + n)^m r^n = (1 + m n) r^n mod n²."""
    nsquare = n * n
    return int((1 + m * n) * gmpy2.powmod(r, n, nsquare) % nsquare)


def _decrypt(c: int, n: int) -> int:
    p, q = _PRIVATE[n]
    lam = math.lcm(p - 1, q - 1)
    u = int(gmpy2.powmod(c, lam, n * n))
    return (u - 1) // n * pow(lam, -1, n) % n


def cases_q2_weighted_sum(rng: np.random.Generator) -> list[list]:
    """2 to 6 fresh encryptions of m_i < 2^32 under one of the key's moduli n (256 bits),
    with weights below 2^16; in every case one weight is 0 and one at least 2."""
    moduli = sorted(_PRIVATE)
    cases = []
    for _ in range(4):
        n = moduli[int(rng.integers(0, len(moduli)))]
        count = int(rng.integers(2, 7))
        messages = [int(m) for m in rng.integers(0, 2**32, count)]
        weights = [int(w) for w in rng.integers(0, 2**16, count)]
        zero, large = (int(i) for i in rng.permutation(count)[:2])
        weights[zero], weights[large] = 0, max(weights[large], 2)
        ciphertexts = []
        for m in messages:
            r = 0
            while math.gcd(r, n) != 1:
                r = _below(rng, n)
            ciphertexts.append(_encrypt(m, r, n))
        cases.append([ciphertexts, weights, n])
    return cases


def reference_q2_weighted_sum(ciphertexts: list[int], weights: list[int], n: int) -> int:
    """prod_i c_i^(w_i) mod n²: an encryption of sum_i w_i m_i."""
    nsquare = n * n
    product = gmpy2.mpz(1)
    for c, w in zip(ciphertexts, weights, strict=True):
        product = product * gmpy2.powmod(c, w, nsquare) % nsquare
    return int(product)


def judge_q2_weighted_sum(args: list, output: object) -> bool:
    """Right when the output is a ciphertext in [0, n²) that decrypts to sum_i w_i m_i mod n,
    with each m_i decrypted from the case's own ciphertexts: so a re-randomized answer counts
    too. A modulus that is not one of this key's, or an output that is not an int, is wrong."""
    ciphertexts, weights, n = args
    if type(output) is not int or n not in _PRIVATE:
        return False
    if not 0 <= output < n * n or math.gcd(output, n) != 1:
        return False
    expected = sum(w * _decrypt(c, n) for c, w in zip(ciphertexts, weights, strict=True)) % n
    return _decrypt(output, n) == expected


# q3 ---------------------------------------------------------------------------------------


def _matrix(rng: np.random.Generator, rows: int, columns: int, modulus: int) -> list[list[int]]:
    return [[_below(rng, modulus) for _ in range(columns)] for _ in range(rows)]


def _combine(modulus: int, *terms: tuple[int, list[list[int]]]) -> list[list[int]]:
    """sum of sign * matrix, elementwise, mod modulus."""
    first = terms[0][1]
    return [
        [sum(sign * m[r][c] for sign, m in terms) % modulus for c in range(len(first[0]))]
        for r in range(len(first))
    ]


def _matmul(a: list[list[int]], b: list[list[int]], modulus: int) -> list[list[int]]:
    return [
        [sum(a[r][k] * b[k][c] for k in range(len(b))) % modulus for c in range(len(b[0]))]
        for r in range(len(a))
    ]


def _shares(
    rng: np.random.Generator, secret: list[list[int]], parties: int, modulus: int
) -> list[list[list[int]]]:
    """Additive shares of a matrix: parties - 1 uniform, the last completes the sum."""
    rows, columns = len(secret), len(secret[0])
    uniform = [_matrix(rng, rows, columns, modulus) for _ in range(parties - 1)]
    last = _combine(modulus, (1, secret), *((-1, u) for u in uniform))
    return [*uniform, last]


def beaver_run(
    rng: np.random.Generator, modulus: int, parties: int, shape: tuple[int, int, int]
) -> dict:
    """One matrix-triple product of X (rows x inner) and Y (inner x columns): the inputs, the
    opened D = X - A and E = Y - B, and every party's shares of A, B and C = A B."""
    rows, inner, columns = shape
    x, y = _matrix(rng, rows, inner, modulus), _matrix(rng, inner, columns, modulus)
    a, b = _matrix(rng, rows, inner, modulus), _matrix(rng, inner, columns, modulus)
    c = _matmul(a, b, modulus)
    return {
        "x": x,
        "y": y,
        "d": _combine(modulus, (1, x), (-1, a)),
        "e": _combine(modulus, (1, y), (-1, b)),
        "shares": [_shares(rng, v, parties, modulus) for v in (a, b, c)],
    }


def cases_q3_beaver_matmul(rng: np.random.Generator) -> list[list]:
    """Party i's view of a real run among 2 to 4 parties, with k, m, l from 2 to 4: party 0
    in the first case, party 1 in the second; modulus 2^16 first, then a large one that is
    not a power of two."""
    cases = []
    for case in range(4):
        modulus = 2**16 if case == 0 else BEAVER_MODULI[int(rng.integers(0, len(BEAVER_MODULI)))]
        parties = int(rng.integers(2, 5))
        i = case if case < 2 else int(rng.integers(0, parties))
        shape = tuple(int(v) for v in rng.integers(2, 5, 3))
        run = beaver_run(rng, modulus, parties, shape)
        a, b, c = run["shares"]
        cases.append([i, run["d"], run["e"], a[i], b[i], c[i], modulus])
    return cases


def reference_q3_beaver_matmul(
    i: int,
    d: list[list[int]],
    e: list[list[int]],
    a_i: list[list[int]],
    b_i: list[list[int]],
    c_i: list[list[int]],
    modulus: int,
) -> list[list[int]]:
    """Z_i = C_i + D B_i + A_i E, plus D E for party 0."""
    terms = [(1, c_i), (1, _matmul(d, b_i, modulus)), (1, _matmul(a_i, e, modulus))]
    if i == 0:
        terms.append((1, _matmul(d, e, modulus)))
    return _combine(modulus, *terms)


# q4 ---------------------------------------------------------------------------------------


def secagg_run(rng: np.random.Generator) -> dict:
    """One aggregation with dropouts: the survivors' inputs, and the server's view (their
    masked vectors, their self-masks, the masks each dropped client shared with each)."""
    modulus = 2 ** int(rng.choice([16, 24, 32]))
    length = int(rng.integers(3, 7))
    count = int(rng.integers(4, 8))
    small, large = int(rng.integers(4, 10)), int(rng.integers(10, 40))
    others = [int(v) for v in rng.permutation([v for v in range(40) if v not in (small, large)])]
    ids = [small, large, *others[: count - 2]]
    # one of {small, large} drops, the other survives; "4" > "39" as strings, 4 < 39 as ints
    first = (small, large)[int(rng.integers(0, 2))]
    dropped = sorted({first, *ids[2 : 2 + int(rng.integers(0, 3))]})
    survivors = sorted(v for v in ids if v not in dropped)

    def vectors(owners: list) -> dict:
        return {u: [int(v) for v in rng.integers(0, modulus, length)] for u in owners}

    inputs, self_masks = vectors(survivors), vectors(survivors)
    pair = vectors([(u, v) for u in sorted(ids) for v in sorted(ids) if u < v])
    masked = {}
    for u in survivors:
        terms = [(1, inputs[u]), (1, self_masks[u])]
        terms += [(1 if u < v else -1, pair[min(u, v), max(u, v)]) for v in ids if v != u]
        masked[str(u)] = [sum(s * t[j] for s, t in terms) % modulus for j in range(length)]
    dropped_masks = {f"{d},{s}": pair[min(d, s), max(d, s)] for d in dropped for s in survivors}
    return {
        "inputs": inputs,
        "view": [masked, {str(u): m for u, m in self_masks.items()}, dropped_masks, modulus],
    }


def cases_q4_unmask(rng: np.random.Generator) -> list[list]:
    """4 to 7 clients with ids below 40, one from 4 to 9 and one from 10 to 39, of which one
    drops and the other survives (ids order as ints, not as strings); 1 to 3 dropped in all;
    ring Z_{2^bits} for bits in 16, 24, 32."""
    return [secagg_run(rng)["view"] for _ in range(4)]


def reference_q4_unmask(
    masked: dict[str, list[int]],
    self_masks: dict[str, list[int]],
    dropped_masks: dict[str, list[int]],
    modulus: int,
) -> list[int]:
    """sum masked - sum self-masks, then undo each survivor s's mask for dropped d: s added
    m_ds when s < d (subtract it) and subtracted it when s > d (add it back)."""
    length = len(next(iter(masked.values())))
    total = [0] * length
    for u, vector in masked.items():
        for j in range(length):
            total[j] += vector[j] - self_masks[u][j]
    for key, mask in dropped_masks.items():
        d, s = (int(v) for v in key.split(","))
        sign = -1 if s < d else 1
        for j in range(length):
            total[j] += sign * mask[j]
    return [t % modulus for t in total]


# q5 ---------------------------------------------------------------------------------------


def cases_q5_rdp_epsilon(rng: np.random.Generator) -> list[list]:
    """sigma in [0.5, 4], 1 to 2000 steps, delta 1e-5 to 1e-8, 5 to 12 orders."""
    cases = []
    for _ in range(4):
        sigma = round(float(rng.uniform(0.5, 4.0)), 3)
        steps = int(rng.integers(1, 2001))
        delta = float(rng.choice([1e-5, 1e-6, 1e-7, 1e-8]))
        size = int(rng.integers(5, 13))
        picked = sorted(int(i) for i in rng.permutation(len(ORDERS))[:size])
        cases.append([sigma, steps, delta, [ORDERS[i] for i in picked]])
    return cases


def reference_q5_rdp_epsilon(sigma: float, steps: int, delta: float, orders: list[float]) -> float:
    """min over alpha of steps alpha / (2 sigma²) + log(1/delta) / (alpha - 1)."""
    return float(min(steps * a / (2 * sigma**2) + math.log(1 / delta) / (a - 1) for a in orders))
