"""Secret sharing: additive shares over the ring Z_{2^k}, and Shamir's t-of-n threshold scheme.

**Additive sharing** splits a value v into n shares that add up to v modulo m = 2^k: n - 1 of
them are uniform, the last is v minus their sum. Any n - 1 shares are uniform and independent
of v; all n are needed. The ring is Z_{2^64} by default, so numpy's uint64 arithmetic, which
wraps around, is the ring's arithmetic; smaller rings (Z_8, Z_16) let tests enumerate every
outcome. The SMPC protocols of :mod:`om_teach.crypto.smpc` compute on these shares.

**Shamir sharing** (Shamir, "How to share a secret", CACM 22(11), 1979) hides a secret s in
the constant term of a random polynomial f of degree t - 1 over a prime field and hands holder
i the point (i, f(i)). Any t points fix f and so s (Lagrange interpolation at 0); any t - 1
points are consistent with every secret, each by exactly one polynomial. The default field is
GF(2^521 - 1), a Mersenne prime, so a 32-byte key is one field element.

Threat model:

- The dealer (whoever splits) is trusted to draw its randomness from a secure source (the
  default: the operating system's) and to forget the secret and the polynomial afterwards.
- Up to n - 1 additive holders, or t - 1 Shamir holders, may collude and pool their shares:
  they learn nothing about the secret, unconditionally (no computational assumption).
- Shares must travel over authenticated, encrypted channels: this module only splits and joins.
- There is no verifiability: a holder that hands in a wrong share corrupts the reconstruction
  undetected. Verifiable secret sharing (Feldman 1987) is out of scope.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from numbers import Integral

import gmpy2
import numpy as np
from numpy.typing import ArrayLike

RING = 2**64
"""The default ring modulus of additive sharing: numpy's uint64 wraps around modulo 2^64."""

PRIME = 2**521 - 1
"""The default Shamir field: a Mersenne prime, large enough for a 32-byte key as one element."""

_INT64_SAFE = 2**31
"""Below this, a product of two field elements fits in int64 and Shamir runs on numpy arrays."""


def _check_modulus(modulus: int) -> int:
    """The bit mask of the ring Z_modulus, which must be a power of two up to 2^64."""
    if not isinstance(modulus, Integral) or modulus < 2 or modulus > RING:
        raise ValueError(f"the ring modulus must be a power of two from 2 to 2**64, got {modulus}")
    if modulus & (modulus - 1):
        raise ValueError(f"the ring modulus must be a power of two, got {modulus}")
    return int(modulus) - 1


def uniform(
    shape: int | tuple[int, ...], *, modulus: int = RING, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Uniform elements of Z_modulus as uint64: from ``rng`` if given (seeded lessons and
    tests), else from the operating system's secure generator (``os.urandom``)."""
    mask = _check_modulus(modulus)
    shape = (shape,) if isinstance(shape, Integral) else tuple(shape)
    if rng is not None:
        return np.asarray(rng.integers(0, modulus, size=shape, dtype=np.uint64))
    count = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(os.urandom(8 * count), dtype=np.uint64).reshape(shape) & np.uint64(mask)


def _as_ring(values: ArrayLike, modulus: int) -> np.ndarray:
    """Integers in [-m/2, m) as elements of Z_m (negatives in two's complement), as uint64."""
    mask = _check_modulus(modulus)
    array = np.asarray(values)
    if array.dtype.kind not in "iu":
        raise TypeError(
            f"additive shares hold integers, got dtype {array.dtype}: "
            "encode real numbers first (om_teach.crypto.smpc.Encoding)"
        )
    if array.size and array.dtype.kind == "i" and int(array.min()) < -(modulus // 2):
        raise ValueError(f"{int(array.min())} is below -{modulus // 2}, outside Z_{modulus}")
    if array.size and int(array.max()) > mask:
        raise ValueError(f"{int(array.max())} is not below the modulus {modulus}")
    if array.dtype.kind == "i":
        return array.astype(np.int64).view(np.uint64) & np.uint64(mask)
    return array.astype(np.uint64)


def additive_share(
    values: ArrayLike,
    parties: int,
    *,
    rng: np.random.Generator | None = None,
    modulus: int = RING,
) -> list[np.ndarray]:
    """Split integer ``values`` into ``parties`` uint64 arrays that add up to them modulo
    ``modulus``: the first ``parties - 1`` are uniform, the last completes the sum.

    Values may be signed (from -modulus/2, in two's complement) or unsigned (below modulus).
    """
    if parties < 2:
        raise ValueError(f"additive sharing needs at least 2 parties, got {parties}")
    secret = _as_ring(values, modulus)
    mask = np.uint64(modulus - 1)
    with np.errstate(over="ignore"):
        random_shares = uniform((parties - 1, *secret.shape), modulus=modulus, rng=rng)
        last = (secret - random_shares.sum(axis=0, dtype=np.uint64)) & mask
    return [*random_shares, np.asarray(last)]


def additive_reconstruct(shares: Sequence[np.ndarray], *, modulus: int = RING) -> np.ndarray:
    """The values (uint64, in [0, modulus)) whose additive shares these are: their sum mod m."""
    mask = _check_modulus(modulus)
    if len(shares) < 2:
        raise ValueError(
            f"reconstruction needs every party's share (at least 2), got {len(shares)}"
        )
    arrays = [np.asarray(s) for s in shares]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"shares differ in shape: {[a.shape for a in arrays]}")
    if any(a.dtype != np.uint64 for a in arrays):
        raise TypeError(f"shares must be uint64 arrays, got {[str(a.dtype) for a in arrays]}")
    with np.errstate(over="ignore"):
        return np.asarray(np.sum(arrays, axis=0, dtype=np.uint64) & np.uint64(mask))


@dataclass(frozen=True)
class ShamirShare:
    """Holder ``x``'s share: the value f(x) of each element's secret polynomial, as ints."""

    x: int
    y: tuple[int, ...]


@lru_cache(maxsize=16)
def _check_prime(prime: int) -> None:
    if not isinstance(prime, Integral) or prime < 2 or not gmpy2.is_prime(prime):
        raise ValueError(f"Shamir sharing needs a prime field, and {prime} is not prime")


def _field_array(values: Sequence[int], prime: int) -> np.ndarray:
    """Field elements as a numpy array: int64 when products fit, else Python ints (object)."""
    return np.array(values, dtype=np.int64 if prime < _INT64_SAFE else object)


def shamir_split(
    secret: int | Sequence[int],
    n: int,
    t: int,
    *,
    prime: int = PRIME,
    rng: random.Random | None = None,
) -> list[ShamirShare]:
    """Split each element of ``secret`` (an int or a sequence of ints in [0, prime)) into ``n``
    shares, any ``t`` of which reconstruct it; holder i gets ``ShamirShare(x=i, y=...)``.

    Each element gets its own random polynomial of degree t - 1, drawn with ``rng.randrange``
    (default: ``random.SystemRandom``, the operating system's secure source). The polynomials
    are evaluated at x = 1..n together, by Horner's rule over whole vectors.
    """
    _check_prime(prime)
    elements = [secret] if isinstance(secret, Integral) else list(secret)
    if not elements:
        raise ValueError("nothing to share: the secret is an empty sequence")
    for s in elements:
        if isinstance(s, bool) or not isinstance(s, Integral) or not 0 <= s < prime:
            raise ValueError(f"each secret must be an int in [0, prime), got {s!r}")
    if not 1 <= t <= n:
        raise ValueError(f"the threshold t must be between 1 and n={n}, got {t}")
    if n >= prime:
        raise ValueError(f"n={n} holders need n distinct non-zero points, more than prime {prime}")
    rng = rng or random.SystemRandom()
    coefficients = [_field_array([int(s) for s in elements], prime)]
    coefficients += [
        _field_array([rng.randrange(prime) for _ in elements], prime) for _ in range(t - 1)
    ]
    xs = _field_array(list(range(1, n + 1)), prime)[:, None]
    points = np.broadcast_to(coefficients[-1], (n, len(elements)))
    for coefficient in reversed(coefficients[:-1]):
        points = (points * xs + coefficient) % prime
    return [ShamirShare(x=i + 1, y=tuple(int(v) for v in row)) for i, row in enumerate(points)]


def lagrange_coefficients(xs: Sequence[int], prime: int = PRIME) -> list[int]:
    """The weights l_i with f(0) = sum_i l_i f(x_i) for every polynomial f of degree below
    len(xs): l_i = prod_{j != i} x_j / (x_j - x_i) mod prime."""
    _check_prime(prime)
    if len(set(xs)) != len(xs):
        raise ValueError(f"interpolation points must be distinct, got {list(xs)}")
    weights = []
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                numerator = numerator * xj % prime
                denominator = denominator * (xj - xi) % prime
        weights.append(numerator * pow(denominator, -1, prime) % prime)
    return weights


def shamir_reconstruct(shares: Sequence[ShamirShare], t: int, *, prime: int = PRIME) -> list[int]:
    """The secret elements that ``t`` of these shares determine (the first t are used),
    by Lagrange interpolation at 0. Always a list, also for a secret shared as one int."""
    _check_prime(prime)
    xs = [s.x for s in shares]
    duplicates = sorted({x for x in xs if xs.count(x) > 1})
    if duplicates:
        raise ValueError(f"two shares claim the same holder x={duplicates[0]}")
    if t < 1 or len(shares) < t:
        raise ValueError(f"reconstruction needs t={t} shares, got {len(shares)}")
    if any(not 0 < x < prime for x in xs):
        raise ValueError(f"holder numbers must lie in [1, prime), got {xs}")
    used = shares[:t]
    lengths = {len(s.y) for s in used}
    if len(lengths) != 1:
        raise ValueError(f"shares hold different numbers of elements: {sorted(lengths)}")
    if any(not 0 <= v < prime for s in used for v in s.y):
        raise ValueError("share values must lie in [0, prime)")
    weights = _field_array(lagrange_coefficients([s.x for s in used], prime), prime)[:, None]
    ys = _field_array([list(s.y) for s in used], prime)
    return [int(v) for v in ((weights * ys) % prime).sum(axis=0) % prime]
