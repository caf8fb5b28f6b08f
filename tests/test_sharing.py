"""Additive and Shamir secret sharing: known answers, every threshold subset, and secrecy
checked by enumerating every random choice in small rings and fields."""

from __future__ import annotations

import random
import secrets
from collections import Counter
from itertools import combinations, product

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from om_teach.crypto.sharing import (
    PRIME,
    RING,
    ShamirShare,
    additive_reconstruct,
    additive_share,
    lagrange_coefficients,
    shamir_reconstruct,
    shamir_split,
    uniform,
)


class Preset:
    """Stands in for numpy's Generator: every draw returns the same preset array."""

    def __init__(self, draws: np.ndarray) -> None:
        self.draws = draws

    def integers(self, low, high, size, dtype):
        assert (low, tuple(size)) == (0, self.draws.shape) and self.draws.max() < high
        return self.draws.astype(dtype)


class Script:
    """Stands in for random.Random: randrange returns the scripted values in turn."""

    def __init__(self, values) -> None:
        self.values = list(values)

    def randrange(self, stop):
        value = self.values.pop(0)
        assert 0 <= value < stop
        return value


def test_additive_known_answer():
    """With drawn shares 3 and 7 in Z_16, the last shares complete 5 and -1 (= 15)."""
    shares = additive_share([5, -1], 2, rng=Preset(np.array([[3, 7]])), modulus=16)
    assert [s.tolist() for s in shares] == [[3, 7], [2, 8]]
    assert additive_reconstruct(shares, modulus=16).tolist() == [5, 15]


@settings(max_examples=60, deadline=None)
@given(
    bits=st.sampled_from([1, 3, 8, 32, 64]),
    parties=st.integers(2, 5),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_additive_round_trip(bits, parties, seed, data):
    """Any integers in [-m/2, m) come back modulo m from all n shares."""
    m = 2**bits
    values = data.draw(st.lists(st.integers(-(m // 2), m - 1), min_size=1, max_size=20))
    if max(values) < 2**63:
        array = np.array(values, dtype=np.int64)
    else:  # beyond int64: the same elements, unsigned
        array = np.array([v % m for v in values], dtype=np.uint64)
    shares = additive_share(array, parties, rng=np.random.default_rng(seed), modulus=m)
    assert len(shares) == parties and all(s.dtype == np.uint64 for s in shares)
    assert all(int(s.max()) < m for s in shares)
    assert additive_reconstruct(shares, modulus=m).tolist() == [v % m for v in values]


def test_default_ring_wraps_at_2_64():
    """In Z_{2^64}, shares of 2^64 - 1 and of -1 are the same element."""
    shares = additive_share(np.array([2**64 - 1], dtype=np.uint64), 3)
    assert additive_reconstruct(shares).tolist() == [2**64 - 1]
    assert additive_reconstruct(additive_share(np.array([-1]), 3)).tolist() == [RING - 1]


def test_any_n_minus_1_additive_shares_carry_no_information():
    """Z_8, 3 parties, all 64 random choices: any 2 shares take every pair once, whatever the
    secret; all 3 shares of course give the secret away."""
    m, parties = 8, 3
    draws = np.array(list(product(range(m), repeat=parties - 1)), dtype=np.uint64).T
    every_pair = Counter(product(range(m), repeat=parties - 1))
    for secret in range(m):
        shares = additive_share(
            np.full(draws.shape[1], secret), parties, rng=Preset(draws), modulus=m
        )
        for holders in combinations(range(parties), parties - 1):
            assert Counter(zip(*(shares[h].tolist() for h in holders), strict=True)) == every_pair
        assert set(additive_reconstruct(shares, modulus=m).tolist()) == {secret}


def test_uniform_uses_the_whole_ring():
    """The OS-random default reaches the top bit of Z_{2^64} and every element of Z_16."""
    top = uniform(4000) >> np.uint64(63)
    assert 1600 < int(top.sum()) < 2400  # Binomial(4000, 1/2): 13 standard deviations
    counts = np.bincount(uniform(16000, modulus=16).astype(np.int64), minlength=16)
    assert len(counts) == 16 and counts.min() > 700  # each expected 1000
    seeded = uniform((2, 3), rng=np.random.default_rng(1))
    assert np.array_equal(seeded, uniform((2, 3), rng=np.random.default_rng(1)))


def test_additive_errors_are_clear():
    """Too few parties, bad moduli, floats and out-of-range values name the problem."""
    with pytest.raises(ValueError, match="at least 2 parties"):
        additive_share([1], 1)
    with pytest.raises(ValueError, match="power of two"):
        additive_share([1], 2, modulus=10)
    with pytest.raises(ValueError, match="from 2 to 2\\*\\*64"):
        additive_share([1], 2, modulus=2**65)
    with pytest.raises(TypeError, match="encode real numbers first"):
        additive_share([0.5], 2)
    with pytest.raises(ValueError, match="not below the modulus 16"):
        additive_share([16], 2, modulus=16)
    with pytest.raises(ValueError, match="-9 is below -8"):
        additive_share([-9], 2, modulus=16)
    with pytest.raises(ValueError, match="differ in shape"):
        additive_reconstruct([np.zeros(2, np.uint64), np.zeros(3, np.uint64)])
    with pytest.raises(TypeError, match="uint64"):
        additive_reconstruct([np.zeros(2), np.zeros(2)])


def test_shamir_known_answer():
    """f(x) = 7 + 3x over GF(11): holders get 10, 2, 5; any two interpolate back to 7."""
    shares = shamir_split(7, 3, 2, prime=11, rng=Script([3]))
    assert shares == [ShamirShare(1, (10,)), ShamirShare(2, (2,)), ShamirShare(3, (5,))]
    assert lagrange_coefficients([1, 2], 11) == [2, 10]  # f(0) = 2 f(1) - f(2)
    for pair in combinations(shares, 2):
        assert shamir_reconstruct(pair, 2, prime=11) == [7]


def test_shamir_32_byte_key_from_every_threshold_subset():
    """A 32-byte key is one element of GF(2^521 - 1); every 3 of 5 shares give it back."""
    key = secrets.token_bytes(32)
    shares = shamir_split(int.from_bytes(key, "big"), 5, 3)
    assert all(len(s.y) == 1 and 0 <= s.y[0] < PRIME for s in shares)
    for subset in combinations(shares, 3):
        assert shamir_reconstruct(subset, 3)[0].to_bytes(32, "big") == key
    assert shamir_reconstruct(shares, 3) == shamir_reconstruct(shares[::-1], 3)


@settings(max_examples=40, deadline=None)
@given(
    prime=st.sampled_from([PRIME, 2**127 - 1, 2**31 - 1, 65537, 13]),
    n=st.integers(1, 7),
    data=st.data(),
)
def test_shamir_vectors_round_trip(prime, n, data):
    """Vectors in big (Python int) and small (numpy int64) fields, from any t shares."""
    t = data.draw(st.integers(1, n))
    vector = data.draw(st.lists(st.integers(0, prime - 1), min_size=1, max_size=30))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    shares = shamir_split(vector, n, t, prime=prime, rng=rng)
    assert [s.x for s in shares] == list(range(1, n + 1))
    chosen = data.draw(st.permutations(shares))[: data.draw(st.integers(t, n))]
    assert shamir_reconstruct(chosen, t, prime=prime) == vector


def test_fewer_than_t_shamir_shares_carry_no_information():
    """GF(7), t = 3 of n = 4, all 49 polynomials per secret: any 2 holders see every pair of
    values exactly once, whatever the secret, while 3 holders' views differ by secret."""
    p, n, t = 7, 4, 3
    uniform_pairs = Counter(product(range(p), repeat=t - 1))
    seen_by_three = {}
    for secret in range(p):
        splits = [
            shamir_split(secret, n, t, prime=p, rng=Script(c))
            for c in product(range(p), repeat=t - 1)
        ]
        for holders in combinations(range(n), t - 1):
            views = Counter(tuple(split[h].y[0] for h in holders) for split in splits)
            assert views == uniform_pairs
        seen_by_three[secret] = {tuple(split[h].y[0] for h in range(t)) for split in splits}
    for a, b in combinations(range(p), 2):
        assert not seen_by_three[a] & seen_by_three[b]


def test_one_shamir_share_of_two_is_uniform():
    """GF(11), t = 2: for every secret, each holder's share takes all 11 values once."""
    for secret in range(11):
        splits = [shamir_split(secret, 3, 2, prime=11, rng=Script([a])) for a in range(11)]
        for holder in range(3):
            assert sorted(split[holder].y[0] for split in splits) == list(range(11))


def test_a_wrong_share_corrupts_the_secret_undetected():
    """No verifiability (the threat model): one altered share silently changes the result."""
    shares = shamir_split([42, 43], 3, 2, prime=PRIME)
    forged = ShamirShare(shares[0].x, (shares[0].y[0] + 1, shares[0].y[1]))
    assert shamir_reconstruct([forged, shares[1]], 2) != [42, 43]


def test_shamir_errors_are_clear():
    """Too few or duplicate shares, non-primes and bad thresholds name the problem."""
    shares = shamir_split([1, 2], 4, 3, prime=13)
    with pytest.raises(ValueError, match="needs t=3 shares, got 2"):
        shamir_reconstruct(shares[:2], 3, prime=13)
    with pytest.raises(ValueError, match="same holder x=1"):
        shamir_reconstruct([shares[0], shares[0], shares[1]], 3, prime=13)
    with pytest.raises(ValueError, match="different numbers of elements"):
        shamir_reconstruct([*shares[:2], ShamirShare(3, (1,))], 3, prime=13)
    with pytest.raises(ValueError, match="not prime"):
        shamir_split(1, 3, 2, prime=15)
    with pytest.raises(ValueError, match=r"int in \[0, prime\)"):
        shamir_split(13, 3, 2, prime=13)
    with pytest.raises(ValueError, match="between 1 and n=3"):
        shamir_split(1, 3, 4, prime=13)
    with pytest.raises(ValueError, match="more than prime 13"):
        shamir_split(1, 13, 2, prime=13)
    with pytest.raises(ValueError, match="empty"):
        shamir_split([], 3, 2)
    with pytest.raises(ValueError, match="distinct"):
        lagrange_coefficients([1, 1], 13)
