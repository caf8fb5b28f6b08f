"""Judges for the toolbox module's exercises: each asks for the core step of one tool."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import phe

from om_teach.exercises import exercise


def _additive(value: int, parties: int, modulus: int, rng: random.Random) -> list[int]:
    """Additive shares of ``value`` modulo ``modulus``."""
    parts = [rng.randrange(modulus) for _ in range(parties - 1)]
    return [*parts, (value - sum(parts)) % modulus]


@exercise("toolbox.paillier_add")
def judge_paillier_add(add: Callable) -> str | None:
    """``add(c1, c2, n)``: the raw ciphertext of m1 + m2 from the raw ciphertexts of m1 and m2."""
    rng = random.Random(2020)
    public, private = phe.generate_paillier_keypair(n_length=256)
    for _ in range(5):
        m1, m2 = rng.randrange(10**6), rng.randrange(10**6)
        c1, c2 = public.raw_encrypt(m1), public.raw_encrypt(m2)
        got = add(c1, c2, public.n)
        if not isinstance(got, int):
            return "return the new ciphertext as a Python int."
        if not 0 <= got < public.nsquare:
            return "ciphertexts live modulo n², not modulo n: reduce your result modulo n * n."
        if private.raw_decrypt(got) != m1 + m2:
            return "Paillier adds plaintexts when you multiply ciphertexts (modulo n²)."
    return None


@exercise("toolbox.shamir_reconstruct")
def judge_shamir_reconstruct(reconstruct: Callable) -> str | None:
    """``reconstruct(points, prime)``: the secret f(0) from t points (x, f(x)) of a polynomial."""
    rng = random.Random(2020)
    for prime, t in ((7919, 2), (7919, 3), (2**127 - 1, 5)):
        coefficients = [rng.randrange(prime) for _ in range(t)]
        xs = rng.sample(range(1, 50), t)
        points = [(x, sum(c * x**i for i, c in enumerate(coefficients)) % prime) for x in xs]
        got = reconstruct(points, prime)
        if not isinstance(got, int):
            return "return the secret as a Python int."
        if got != coefficients[0]:
            return (
                "evaluate the Lagrange interpolation at x = 0: for each point, multiply y by "
                "the product of x_j / (x_j - x_i) over the other points, with division as "
                "multiplication by the inverse modulo the prime (pow(v, -1, prime))."
            )
    return None


@exercise("toolbox.beaver_share")
def judge_beaver_share(share: Callable) -> str | None:
    """``share(i, d, e, a_i, b_i, c_i, modulus)``: party i's share of x·y with a Beaver triple."""
    rng = random.Random(2020)
    modulus = 2**16
    for parties in (2, 3):
        x, y = rng.randrange(modulus), rng.randrange(modulus)
        a, b = rng.randrange(modulus), rng.randrange(modulus)

        a_s, b_s, c_s = (_additive(v, parties, modulus, rng) for v in (a, b, a * b % modulus))
        d, e = (x - a) % modulus, (y - b) % modulus  # opened by all parties
        shares = [share(i, d, e, a_s[i], b_s[i], c_s[i], modulus) for i in range(parties)]
        if not all(isinstance(s, int) for s in shares):
            return "return each share as a Python int."
        if sum(shares) % modulus != x * y % modulus:
            return (
                "x·y = (d + a)(e + b) = d·e + d·b + e·a + a·b. Each party holds shares of a, "
                "b and a·b = c; the public term d·e must be added by exactly one party."
            )
    return None


@exercise("toolbox.masked_input")
def judge_masked_input(masked: Callable) -> str | None:
    """``masked(x, me, masks, modulus)``: x plus the pairwise masks, signed so that they cancel."""
    modulus, n, length = 2**32, 4, 6
    rng = np.random.default_rng(5)
    inputs = rng.integers(0, 1000, (n, length), dtype=np.int64)
    pair = {
        (i, j): rng.integers(0, modulus, length, dtype=np.int64)
        for i in range(n)
        for j in range(i + 1, n)
    }
    outputs = []
    for me in range(n):
        masks = {j: pair[min(me, j), max(me, j)] for j in range(n) if j != me}
        y = np.asarray(masked(inputs[me].copy(), me, masks, modulus), dtype=np.int64) % modulus
        if y.shape != (length,):
            return "return one masked vector, as long as the input."
        if np.array_equal(y, inputs[me]):
            return "the masked vector equals the input: the server would see it in the clear."
        outputs.append(y)
    if not np.array_equal(np.sum(outputs, axis=0) % modulus, inputs.sum(axis=0) % modulus):
        return (
            "the masks do not cancel in the sum: add the mask shared with j when me < j and "
            "subtract it when me > j, modulo the ring."
        )
    return None


@exercise("toolbox.clip")
def judge_clip(clip: Callable) -> str | None:
    """``clip(update, clip_norm)``: the update scaled to L2 norm at most clip_norm."""
    rng = np.random.default_rng(9)
    for scale in (0.1, 1.0, 10.0, 1000.0):
        update = rng.normal(size=20) * scale
        got = np.asarray(clip(update.copy(), 1.5), dtype=float)
        if got.shape != update.shape:
            return "return a vector of the same shape as the update."
        norm = np.linalg.norm(update)
        if np.linalg.norm(got) > 1.5 + 1e-9:
            return "the clipped update is still longer than clip_norm (use the L2 norm)."
        want = update if norm <= 1.5 else update * 1.5 / norm
        if not np.allclose(got, want):
            return (
                "scale the whole update by clip_norm / norm when it is too long, and leave a "
                "short update unchanged: clipping must not change the direction."
            )
    return None
