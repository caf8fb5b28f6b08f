"""Packed Paillier vectors: known answers, sums and multiples, every refusal, and what an
aggregator holding only the public key can (not) learn."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import PaillierPublicKey
from phe.util import invert, powmod

from om_teach.crypto.paillier import (
    EncryptedVector,
    ObfuscatorPool,
    PackingLayout,
    generate_keypair,
)

HAND = {"precision": 1.5, "max_abs": 2, "max_summands": 3}  # step 0.5, offset 4, 5-bit slots


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(512)


@pytest.fixture(scope="module")
def other_keys():
    return generate_keypair(512)


def _encrypt(public_key, values, **layout):
    return EncryptedVector.encrypt(public_key, values, **(layout or HAND))


def _obfuscators(public_key, vector, values):
    """The r**n factor inside each ciphertext, recovered by dividing out g**m."""
    plaintexts = vector.layout.pack(vector.layout.encode(values))
    nsquare = public_key.nsquare
    return [
        c * invert((1 + public_key.n * m) % nsquare, nsquare) % nsquare
        for c, m in zip(vector.ciphertexts, plaintexts, strict=True)
    ]


def test_generate_keypair_gives_the_requested_size():
    """n has exactly the requested number of bits; odd and too-small sizes are refused."""
    public_key, private_key = generate_keypair(512)
    assert public_key.n.bit_length() == 512 and private_key.p * private_key.q == public_key.n
    with pytest.raises(ValueError, match="even"):
        generate_keypair(513)
    with pytest.raises(ValueError, match="at least 512"):
        generate_keypair(256)
    with pytest.raises(TypeError, match="int"):
        generate_keypair(2048.0)


def test_layout_known_answer():
    """precision 1.5 over 3 summands of |x| <= 2: step 0.5, offset 4, 5-bit slots, 102 slots."""
    layout = PackingLayout(512, **HAND)
    assert (layout.step, layout.offset, layout.slot_bits, layout.slots) == (0.5, 4, 5, 102)
    slots = layout.encode(np.array([1.0, -2.0, 1.5]))
    assert slots == [6, 0, 7]
    assert layout.pack(slots) == [6 + (0 << 5) + (7 << 10)] == [7174]
    assert layout.unpack([7174], 3, count=1) == [6, 0, 7]
    assert layout.decode([6, 0, 7], count=1).tolist() == [1.0, -2.0, 1.5]


def test_layout_rounds_half_to_even_and_spans_ciphertexts():
    """103 values take two plaintexts, the second holding one slot; x.25 rounds to even."""
    layout = PackingLayout(512, **HAND)
    assert layout.encode(np.array([0.25, 0.75, -0.25])) == [4, 6, 4]
    slots = layout.encode(np.full(103, -1.5))
    assert set(slots) == {1} and layout.ciphertexts_for(103) == 2
    plaintexts = layout.pack(slots)
    assert plaintexts == [sum(1 << (5 * i) for i in range(102)), 1]
    assert layout.decode(layout.unpack(plaintexts, 103, count=1), count=1).tolist() == [-1.5] * 103


def test_sum_of_three_vectors_known_answer(keys):
    """[1,-2,1.5] + [.5,.5,-1] + [-1,2,2] = [.5,.5,2.5]; the packed sum is 13 + 13·2⁵ + 17·2¹⁰."""
    public_key, private_key = keys
    rows = [[1.0, -2.0, 1.5], [0.5, 0.5, -1.0], [-1.0, 2.0, 2.0]]
    total = EncryptedVector.sum(_encrypt(public_key, row) for row in rows)
    assert total.count == 3 and len(total) == 3
    assert [private_key.raw_decrypt(c) for c in total.ciphertexts] == [13 + 13 * 32 + 17 * 1024]
    assert total.decrypt(private_key).tolist() == [0.5, 0.5, 2.5]


def test_layout_parameters_are_validated():
    """Non-positive, non-finite or too-fine parameters, and keys with no room, are refused."""
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="precision must be positive"):
            PackingLayout(512, bad, 1.0, 2)
    with pytest.raises(TypeError, match="precision must be a number"):
        PackingLayout(512, True, 1.0, 2)
    with pytest.raises(ValueError, match="max_summands must be at least 1"):
        PackingLayout(512, 1e-3, 1.0, 0)
    with pytest.raises(ValueError, match="exceeds 2\\*\\*50"):
        PackingLayout(2048, 1e-12, 1e6, 10)
    with pytest.raises(ValueError, match="holds none"):
        PackingLayout(32, 1e-6, 1e3, 10)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_packed_sum_decrypts_within_precision(keys, data):
    """Any k <= max_summands vectors: the decrypted sum is the sum of their fixed-point
    encodings exactly, and within precision of the float sum."""
    public_key, private_key = keys
    precision = data.draw(st.sampled_from([1e-6, 1e-3, 0.25]))
    max_abs = data.draw(st.sampled_from([1.0, 10.0, 1000.0]))
    k = data.draw(st.integers(1, 5))
    max_summands = data.draw(st.integers(k, 8))
    length = data.draw(st.integers(1, 60))
    row = st.lists(st.floats(-max_abs, max_abs), min_size=length, max_size=length)
    rows = np.array(data.draw(st.lists(row, min_size=k, max_size=k)))
    layout = {"precision": precision, "max_abs": max_abs, "max_summands": max_summands}
    total = EncryptedVector.sum(_encrypt(public_key, r, **layout) for r in rows)
    decrypted = total.decrypt(private_key)
    step = total.layout.step
    assert np.array_equal(decrypted, np.rint(rows / step).sum(axis=0) * step)
    assert np.max(np.abs(decrypted - rows.sum(axis=0))) <= precision


@settings(max_examples=25, deadline=None)
@given(
    a=st.lists(st.floats(-10, 10), min_size=1, max_size=30),
    scalar=st.integers(1, 4),
    shift=st.floats(-10, 10),
)
def test_scalar_multiple_decrypts_within_precision(keys, a, scalar, shift):
    """v * k decrypts to k·v within precision, and (u + v) * k equals u * k + v * k."""
    public_key, private_key = keys
    layout = {"precision": 1e-4, "max_abs": 10.0, "max_summands": 8}
    b = np.clip(np.array(a) + shift, -10, 10)
    u, v = _encrypt(public_key, a, **layout), _encrypt(public_key, b, **layout)
    scaled = u * scalar
    assert scaled.count == scalar and (scalar * u).count == scalar
    assert np.max(np.abs(scaled.decrypt(private_key) - scalar * np.array(a))) <= 1e-4
    assert np.array_equal(
        ((u + v) * scalar).decrypt(private_key), (u * scalar + v * scalar).decrypt(private_key)
    )


def test_builtin_sum_matches_fast_sum(keys):
    """sum() through __radd__ and EncryptedVector.sum give the very same ciphertexts."""
    public_key, private_key = keys
    vectors = [_encrypt(public_key, [0.5 * i, -1.0, 2.0]) for i in range(3)]
    assert sum(vectors).ciphertexts == EncryptedVector.sum(vectors).ciphertexts
    assert (vectors[0] + vectors[1] + vectors[2]).ciphertexts == sum(vectors).ciphertexts
    assert sum(vectors).decrypt(private_key).tolist() == [1.5, -3.0, 6.0]


def test_foreign_key_is_refused(keys, other_keys):
    """Adding, decrypting, pooling or loading across keys raises, never returns a number."""
    (public_key, _), (other_public, other_private) = keys, other_keys
    mine, theirs = _encrypt(public_key, [1.0]), _encrypt(other_public, [1.0])
    with pytest.raises(ValueError, match="different public key"):
        mine + theirs
    with pytest.raises(ValueError, match="different public key"):
        EncryptedVector.sum([mine, mine, theirs])
    with pytest.raises(ValueError, match="different public key"):
        mine.decrypt(other_private)
    with pytest.raises(ValueError, match="different public key"):
        EncryptedVector.from_dict(mine.to_dict(), public_key=other_public)
    with pytest.raises(ValueError, match="pool belongs to a different public key"):
        EncryptedVector.encrypt(public_key, [1.0], **HAND, pool=ObfuscatorPool(other_public))
    with pytest.raises(ValueError, match="pool belongs to a different public key"):
        mine.rerandomized(ObfuscatorPool(other_public))


def test_length_and_layout_mismatch_are_refused(keys):
    """Vectors of different lengths or layouts do not add."""
    public_key, _ = keys
    with pytest.raises(ValueError, match="length mismatch: vector 1 has 2 values, not 3"):
        _encrypt(public_key, [1.0, 1.0, 1.0]) + _encrypt(public_key, [1.0, 1.0])
    coarse = dict(HAND, precision=3.0)
    with pytest.raises(ValueError, match="different layout"):
        _encrypt(public_key, [1.0]) + _encrypt(public_key, [1.0], **coarse)


def test_overflow_past_max_summands_is_refused(keys):
    """Sums and multiples that would count more than max_summands encryptions raise."""
    public_key, private_key = keys
    one, two = _encrypt(public_key, [2.0]), _encrypt(public_key, [2.0]) * 2
    assert (one + two).decrypt(private_key).tolist() == [6.0]
    with pytest.raises(ValueError, match="would sum 4 encryptions, past max_summands 3"):
        two + two
    with pytest.raises(ValueError, match="past max_summands"):
        sum([one, one, one, one])
    with pytest.raises(ValueError, match="past max_summands"):
        EncryptedVector.sum([one] * 4)
    with pytest.raises(ValueError, match="multiplying by 2 would sum 4"):
        two * 2
    with pytest.raises(ValueError, match="multiplying by 4"):
        one * 4


def test_tampered_or_overflowed_ciphertext_is_refused_at_decryption(keys):
    """A slot beyond what valid sums reach, non-zero padding or bits past the slots all raise."""
    public_key, private_key = keys
    layout = PackingLayout(512, **HAND)

    def forged(plaintext, length=3):
        ciphertext = public_key.raw_encrypt(plaintext)
        return EncryptedVector(public_key, [ciphertext], length=length, layout=layout, count=1)

    assert forged(layout.pack([8, 0, 0])[0]).decrypt(private_key).tolist() == [2.0, -2.0, -2.0]
    with pytest.raises(ValueError, match="slot overflow at index 0: 9 exceeds 8"):
        forged(layout.pack([9, 0, 0])[0]).decrypt(private_key)
    with pytest.raises(ValueError, match="non-zero padding"):
        forged(layout.pack([0, 0, 0, 1])[0]).decrypt(private_key)
    with pytest.raises(ValueError, match="past its slots"):
        forged(1 << (5 * 102)).decrypt(private_key)


def test_out_of_range_values_are_refused(keys):
    """|x| > max_abs, NaN, infinities, empty, 2-D and non-numbers raise; ±max_abs is fine."""
    public_key, private_key = keys
    assert _encrypt(public_key, [2.0, -2.0]).decrypt(private_key).tolist() == [2.0, -2.0]
    for bad in ([0.0, 2.001], [-2.5], [float("nan")], [float("inf")], [-float("inf")]):
        with pytest.raises(ValueError, match="outside the encodable range"):
            _encrypt(public_key, bad)
    with pytest.raises(ValueError, match="index 1"):
        _encrypt(public_key, [0.0, 3.0])
    with pytest.raises(ValueError, match="empty"):
        _encrypt(public_key, [])
    with pytest.raises(ValueError, match="1-D"):
        _encrypt(public_key, [[1.0, 2.0]])
    with pytest.raises(TypeError, match="real numbers"):
        _encrypt(public_key, ["one"])
    with pytest.raises(TypeError, match="PaillierPublicKey"):
        EncryptedVector.encrypt(public_key.n, [1.0], **HAND)


def test_bad_operands_are_refused(keys):
    """Only positive int scalars multiply, and only EncryptedVectors add."""
    public_key, _ = keys
    vector = _encrypt(public_key, [1.0])
    for scalar in (0.5, True, "2"):
        with pytest.raises(TypeError, match="only by a positive int"):
            vector * scalar
    for scalar in (0, -1):
        with pytest.raises(ValueError, match="positive int"):
            vector * scalar
    with pytest.raises(TypeError, match="only by a positive int"):
        vector * vector
    for other in (1, 1.0, np.array([1.0])):
        with pytest.raises(TypeError, match="only EncryptedVectors add"):
            vector + other
        with pytest.raises(TypeError, match="only EncryptedVectors add"):
            other + vector
    with pytest.raises(ValueError, match="no vectors"):
        EncryptedVector.sum([])


def test_json_round_trip():
    """to_dict survives json.dumps/loads, decrypts the same, and serializes identically."""
    public_key, private_key = generate_keypair(1024)
    layout = {"precision": 1e-6, "max_abs": 5.0, "max_summands": 4}
    values = np.linspace(-5, 5, 200)
    vector = _encrypt(public_key, values, **layout) * 2
    text = json.dumps(vector.to_dict())
    loaded = EncryptedVector.from_dict(json.loads(text))
    assert loaded.to_dict() == vector.to_dict() and loaded.count == 2
    assert np.array_equal(loaded.decrypt(private_key), vector.decrypt(private_key))
    assert np.max(np.abs(loaded.decrypt(private_key) - 2 * values)) <= 1e-6
    attached = EncryptedVector.from_dict(json.loads(text), public_key=public_key)
    assert attached.public_key is public_key


def _mutations():
    def drop(name):
        return lambda d: d.pop(name)

    def put(name, value):
        return lambda d: d.__setitem__(name, value)

    def put_layout(name, value):
        return lambda d: d["layout"].__setitem__(name, value)

    def put_ciphertext(value):
        return lambda d: d["ciphertexts"].__setitem__(0, value)

    return [
        (drop("ciphertexts"), ValueError, "missing field\\(s\\) \\['ciphertexts'\\]"),
        (lambda d: d["layout"].pop("slots"), ValueError, "layout is missing"),
        (put("format", "phe"), ValueError, "unknown format"),
        (lambda d: d.__setitem__("n", int(d["n"])), TypeError, "n must be a decimal string"),
        (put("n", "12ab"), ValueError, "n is not a decimal string"),
        (put("n", "15"), ValueError, "odd modulus"),
        (put("length", "3"), TypeError, "length must be an int"),
        (put("length", True), TypeError, "length must be an int"),
        (put("count", 0), ValueError, "count must be at least 1"),
        (put("count", 4), ValueError, "exceeds max_summands"),
        (put("ciphertexts", "123"), TypeError, "'ciphertexts' must be a list"),
        (lambda d: d["ciphertexts"].append("5"), ValueError, "take 1 ciphertexts"),
        (put_ciphertext("0"), ValueError, "ciphertext 0 is not in the range"),
        (put_ciphertext(7), TypeError, "ciphertext 0 must be a decimal string"),
        (put("layout", [1]), TypeError, "'layout' must be a dict"),
        (put_layout("slots", 50), ValueError, "layout field 'slots' is 50"),
        (put_layout("offset", "4"), TypeError, "'offset' must be an int"),
        (put_layout("precision", "1.5"), TypeError, "precision must be a number"),
        (put_layout("max_summands", 3.0), TypeError, "max_summands must be an int"),
    ]


@pytest.mark.parametrize(("mutate", "error", "message"), _mutations())
def test_malformed_serialized_vector_is_refused(keys, mutate, error, message):
    """Each missing field, wrong type or inconsistent value names the problem."""
    public_key, _ = keys
    data = copy.deepcopy(_encrypt(public_key, [1.0, 2.0, -1.0]).to_dict())
    mutate(data)
    with pytest.raises(error, match=message):
        EncryptedVector.from_dict(data)


def test_ciphertext_at_n_squared_and_non_dict_are_refused(keys):
    """A ciphertext outside (0, n²) and a non-mapping both raise."""
    public_key, _ = keys
    data = _encrypt(public_key, [1.0]).to_dict()
    data["ciphertexts"] = [str(public_key.nsquare)]
    with pytest.raises(ValueError, match="not in the range"):
        EncryptedVector.from_dict(data)
    with pytest.raises(TypeError, match="is a dict, not list"):
        EncryptedVector.from_dict([data])


def test_each_obfuscator_is_used_once(keys, monkeypatch):
    """Encryptions draw precomputed factors first, then fresh ones; no factor appears twice."""
    key = PaillierPublicKey(keys[0].n)
    draws = iter(range(2, 100))
    monkeypatch.setattr(key, "get_random_lt_n", lambda: next(draws))
    pool = ObfuscatorPool(key, 4)
    assert len(pool) == 4
    layout = {"precision": 1e-3, "max_abs": 1.0, "max_summands": 2}
    values = np.linspace(-1, 1, 100)  # 100 values at 39 slots: 3 ciphertexts
    first = EncryptedVector.encrypt(key, values, **layout, pool=pool)
    assert len(first.ciphertexts) == 3 and len(pool) == 1
    second = EncryptedVector.encrypt(key, values, **layout, pool=pool)
    assert len(pool) == 0
    used = _obfuscators(key, first, values) + _obfuscators(key, second, values)
    assert sorted(used) == sorted(powmod(r, key.n, key.nsquare) for r in range(2, 8))
    pool.precompute(2)
    assert len(pool) == 2 and len(pool.take(5)) == 5 and len(pool) == 0


def test_a_reused_obfuscator_leaks_the_difference(keys, monkeypatch):
    """With one r for two ciphertexts, c1/c2 = (1+n)^(m1-m2) gives the plaintext difference
    away; with the pool's fresh factors the same attack recovers nothing."""
    public_key, _ = keys
    n, nsquare = public_key.n, public_key.nsquare
    x1, x2 = [2.0, 1.0, 0.5], [-1.0, 1.0, 0.0]
    layout = PackingLayout(512, **HAND)
    difference = layout.pack(layout.encode(x1))[0] - layout.pack(layout.encode(x2))[0]

    def attack(c1, c2):
        return (c1 * invert(c2, nsquare) % nsquare - 1) // n

    fresh = [_encrypt(public_key, x).ciphertexts[0] for x in (x1, x2)]
    assert attack(*fresh) != difference
    reusing = PaillierPublicKey(n)
    monkeypatch.setattr(reusing, "get_random_lt_n", lambda: 12345)
    reused = [_encrypt(reusing, x).ciphertexts[0] for x in (x1, x2)]
    assert attack(*reused) == difference


def test_fresh_encryptions_of_one_vector_differ(keys):
    """The packed ciphertext is not a function of the plaintext: two encryptions share none."""
    public_key, private_key = keys
    values = np.linspace(-2, 2, 250)
    a, b = _encrypt(public_key, values), _encrypt(public_key, values)
    assert len(a.ciphertexts) == 3
    assert not set(a.ciphertexts) & set(b.ciphertexts)
    assert np.array_equal(a.decrypt(private_key), b.decrypt(private_key))
    again = a.rerandomized()
    assert again.count == a.count and not set(again.ciphertexts) & set(a.ciphertexts)
    assert np.array_equal(again.decrypt(private_key), a.decrypt(private_key))


def _distinguishing_game(public_key, trials, seed=0):
    """Wins of an aggregator who sees E(v_b) for a secret coin b and must name b. It
    encrypts both candidates itself and compares; failing a match, it guesses from a
    ciphertext bit."""
    coins = random.Random(seed)
    v0, v1 = [1.0, 0.0, -1.5], [-2.0, 0.5, 2.0]
    wins = 0
    for _ in range(trials):
        b = coins.randrange(2)
        challenge = _encrypt(public_key, (v0, v1)[b]).ciphertexts
        if challenge == _encrypt(public_key, v0).ciphertexts:
            guess = 0
        elif challenge == _encrypt(public_key, v1).ciphertexts:
            guess = 1
        else:
            guess = challenge[0] & 1
        wins += guess == b
    return wins


def test_aggregator_cannot_tell_two_vectors_apart(keys, monkeypatch):
    """The aggregator's win rate is chance; the same adversary wins every round against
    encryption without fresh obfuscation, so the game can catch a leak."""
    public_key, _ = keys
    trials = 200
    assert 0.3 * trials < _distinguishing_game(public_key, trials) < 0.7 * trials
    deterministic = PaillierPublicKey(public_key.n)
    monkeypatch.setattr(deterministic, "get_random_lt_n", lambda: 1)
    assert _distinguishing_game(deterministic, trials) == trials


def test_public_key_holder_cannot_decrypt(keys, other_keys):
    """The serialized form carries no private material, and only the matching private key
    decrypts."""
    public_key, private_key = keys
    vector = _encrypt(public_key, [1.0, -1.0])
    text = json.dumps(vector.to_dict())
    secrets = (
        private_key.p,
        private_key.q,
        (private_key.p - 1) * (private_key.q - 1),
        private_key.hp,
        private_key.hq,
        private_key.p_inverse,
    )
    for secret in secrets:
        assert str(secret) not in text
    assert set(vector.to_dict()) == {"format", "n", "length", "count", "layout", "ciphertexts"}
    loaded = EncryptedVector.from_dict(json.loads(text))
    with pytest.raises(TypeError, match="needs a phe PaillierPrivateKey"):
        loaded.decrypt(loaded.public_key)
    with pytest.raises(ValueError, match="different public key"):
        loaded.decrypt(other_keys[1])
    assert loaded.decrypt(private_key).tolist() == [1.0, -1.0]


def test_pool_arguments_are_validated(keys):
    """Pools refuse negative or non-int sizes and non-keys."""
    public_key, _ = keys
    with pytest.raises(ValueError, match="k must be at least 0"):
        ObfuscatorPool(public_key, -1)
    with pytest.raises(TypeError, match="k must be an int"):
        ObfuscatorPool(public_key).take(1.0)
    with pytest.raises(TypeError, match="PaillierPublicKey"):
        ObfuscatorPool(public_key.n)
