"""SMPC on shared fixed-point tensors: results against plaintext, the truncation's failure
bound, the same answers in threads and in processes, and what a party can learn: views
enumerated exhaustively on small rings, and an attacker that guesses at chance."""

from __future__ import annotations

import threading
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from om_teach.crypto.smpc import (
    DEFAULT_ENCODING,
    VALUE_LIMIT,
    Encoding,
    ThreadNetwork,
    argmax,
    less_than_zero,
    linear_classifier_accuracy,
    relu,
    run_in_processes,
    run_in_threads,
    truncate,
)

RESOLUTION = 2.0**-DEFAULT_ENCODING.fraction_bits
Z8 = Encoding(ring_bits=3, fraction_bits=0, range_bits=1)


def both_inputs(program):
    """A program over x (from party 0) and y (from party 1), both real-valued."""

    def run(party, private):
        x = party.share(private if party.rank == 0 else None, owner=0)
        y = party.share(private if party.rank == 1 else None, owner=1)
        return program(x, y)

    return run


def exact(values):
    """What the parties compute on: values rounded to the fixed-point grid."""
    return np.round(np.asarray(values) / RESOLUTION) * RESOLUTION


def test_encoding_known_answers():
    """1.5 is 6144 = 1.5 * 2^12; -1 is 2^64 - 2^12; the range is 512, the bound 2^-30."""
    assert DEFAULT_ENCODING.encode([1.5, -1.0]).tolist() == [6144, 2**64 - 4096]
    assert DEFAULT_ENCODING.decode(np.array([6144, 2**64 - 4096], np.uint64), 12).tolist() == [
        1.5,
        -1.0,
    ]
    assert VALUE_LIMIT == DEFAULT_ENCODING.limit == 512.0
    assert DEFAULT_ENCODING.failure_probability == 2.0**-30
    assert Z8.to_signed(np.arange(8, dtype=np.uint64)).tolist() == [0, 1, 2, 3, -4, -3, -2, -1]


def test_encoding_refuses_values_outside_the_range():
    """512 and beyond, NaN, and inconsistent encodings are refused with the reason."""
    DEFAULT_ENCODING.encode([511.99, -511.99])
    with pytest.raises(ValueError, match="outside the documented range"):
        DEFAULT_ENCODING.encode([1.0, -512.0])
    with pytest.raises(ValueError, match="NaN"):
        DEFAULT_ENCODING.encode([np.nan])
    with pytest.raises(ValueError, match="range_bits must lie between"):
        Encoding(ring_bits=32)
    with pytest.raises(ValueError, match="ring_bits must be between 2 and 64"):
        Encoding(ring_bits=65)


finite = st.floats(-15, 15, allow_nan=False)


@settings(max_examples=25, deadline=None)
@given(
    x=st.lists(finite, min_size=1, max_size=6),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
)
def test_arithmetic_matches_plaintext(x, data, seed):
    """+, -, *, public scalars, and the sum agree with numpy within the fixed-point error."""
    x = np.array(x)
    y = np.array(data.draw(st.lists(finite, min_size=len(x), max_size=len(x))))
    program = both_inputs(
        lambda a, b: np.stack(
            [
                (a + b).reveal(),
                (a - b).reveal(),
                (a * b).reveal(),
                (2.5 - a * 0.5).reveal(),
                (3 * b + 1).reveal(),
                np.full(len(x), (a * b).sum().reveal()),
            ]
        )
    )
    out, other = run_in_threads(program, [x, y], rng=seed)
    assert np.array_equal(out, other)
    ex, ey = exact(x), exact(y)
    assert np.array_equal(out[0], ex + ey) and np.array_equal(out[1], ex - ey)
    assert np.array_equal(out[4], 3 * ey + 1)
    product_error = (np.abs(x) + np.abs(y) + 4) * RESOLUTION
    assert np.all(np.abs(out[2] - x * y) <= product_error)
    assert np.all(np.abs(out[3] - (2.5 - x * 0.5)) <= 4 * RESOLUTION)
    assert abs(out[5][0] - (x * y).sum()) <= product_error.sum()


@settings(max_examples=15, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 3)),
    seed=st.integers(0, 2**32 - 1),
)
def test_matmul_matches_plaintext(shape, seed):
    """Shared @ shared, shared @ public and public @ shared, within d products' error."""
    n, d, k = shape
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-4, 4, (n, d)), rng.uniform(-4, 4, (d, k))
    left, right = rng.uniform(-4, 4, (2, n)), rng.uniform(-4, 4, (k, 2))

    def products(x, y):
        xy = x @ y
        return np.concatenate(
            [(xy).reveal().ravel(), (xy @ right).reveal().ravel(), (left @ xy).reveal().ravel()]
        )

    out = run_in_threads(both_inputs(products), [a, b], rng=seed)[0]
    want = [a @ b, a @ b @ right, left @ a @ b]
    tolerance = [(4 * d + 2) * RESOLUTION] + [(24 * d + 10) * max(n, k) * RESOLUTION] * 2
    sizes = np.cumsum([w.size for w in want])[:-1]
    for got, expected, tol in zip(np.split(out, sizes), want, tolerance, strict=True):
        assert np.all(np.abs(got - expected.ravel()) <= tol)


def truncated(bits):
    def program(party, private):
        x = party.share_integers(private if party.rank == 1 else None, owner=1)
        return truncate(x, bits).reveal()

    return program


def test_truncation_is_off_by_at_most_one_inside_the_range():
    """200,000 ring values up to 2^33: x / 2^12 comes out as its floor or one more."""
    x = np.random.default_rng(0).integers(-(2**33) + 1, 2**33, 200_000)
    out = run_in_threads(truncated(12), [None, x], rng=1)[0]
    error = out - (x >> 12)
    assert set(np.unique(error)) == {0, 1}


def test_truncation_fails_as_predicted_outside_the_range():
    """At x = 2^61 the mask wraps with probability (2^61 + 2^33) / 2^64 ~ 1/8: so it does."""
    x = np.full(20_000, 2**61)
    out = run_in_threads(truncated(12), [None, x], rng=2)[0]
    failures = np.mean(np.abs(out - (x >> 12)) > 1)
    assert 0.11 < failures < 0.14  # 1/8, +-7 standard deviations


def test_comparison_is_exact_across_the_signed_ring():
    """[x < 0] for the extreme 64-bit values, 0 and +-1."""
    x = np.array([0, 1, -1, 2**62, -(2**62), 2**63 - 1, -(2**63), 12345, -12345])

    def program(party, private):
        return less_than_zero(party.share_integers(private, owner=0)).reveal()

    out = run_in_threads(program, [x, None], rng=3)[0]
    assert out.tolist() == (x < 0).astype(int).tolist()


@settings(max_examples=15, deadline=None)
@given(
    values=st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=12),
    seed=st.integers(0, 2**32 - 1),
)
def test_relu_and_comparisons_match_plaintext(values, seed):
    """relu is exact on the encoded values; x < y and x > y agree with numpy."""
    x = np.array(values)
    y = np.roll(x, 1)
    program = both_inputs(
        lambda a, b: np.stack([relu(a).reveal(), (a < b).reveal(), (a > b).reveal()])
    )
    out = run_in_threads(program, [x, y], rng=seed)[0]
    ex, ey = exact(x), exact(y)
    assert np.array_equal(out[0], np.maximum(ex, 0))
    assert np.array_equal(out[1], ex < ey) and np.array_equal(out[2], ex > ey)


@settings(max_examples=15, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 7)),
    seed=st.integers(0, 2**32 - 1),
)
def test_argmax_is_one_hot_at_the_first_maximum(shape, seed):
    """One-hot, at np.argmax's index: ties (values drawn from a few levels) go to the first."""
    scores = np.random.default_rng(seed).integers(-3, 3, shape) * 1.25

    def program(party, private):
        return argmax(party.share(private, owner=0)).reveal()

    onehot = run_in_threads(program, [scores, None], rng=seed)[0]
    assert np.array_equal(onehot, np.eye(shape[1], dtype=int)[scores.argmax(axis=1)])


def classifier_task(seed=0, rows=60):
    """A linear model (party 0) and labelled rows (party 1) with clear top-score margins."""
    rng = np.random.default_rng(seed)
    features, weights, bias = (
        rng.normal(size=(rows, 4)),
        rng.normal(size=(4, 3)),
        rng.normal(size=3),
    )
    scores = features @ weights + bias
    top2 = np.sort(scores, axis=1)[:, -2:]
    keep = top2[:, 1] - top2[:, 0] > 0.05  # no near-ties that fixed point could flip
    labels = (scores + rng.normal(size=scores.shape)).argmax(axis=1)
    model = {"weights": weights, "bias": bias}
    data = {"features": features[keep], "labels": labels[keep]}
    return model, data, float(np.mean(scores[keep].argmax(axis=1) == labels[keep]))


def test_classifier_accuracy_in_threads_and_processes():
    """The same seeded computation gives the plaintext accuracy, in threads and in 3 processes."""
    model, data, plaintext = classifier_task()
    threads = run_in_threads(linear_classifier_accuracy, [model, data], rng=7)
    processes = run_in_processes(linear_classifier_accuracy, [model, data], rng=7)
    assert 0.3 < plaintext < 0.9  # a classifier that is neither always right nor always wrong
    assert [float(a) for a in threads] == [float(a) for a in processes] == [plaintext] * 2


def test_a_failing_process_reports_its_own_error():
    """Party 0 without its model fails; the others' aborted waits are not what is reported."""
    _, data, _ = classifier_task(rows=5)
    with pytest.raises(RuntimeError, match=r"(?s)endpoint 0 failed.*party 0 owns this input"):
        run_in_processes(linear_classifier_accuracy, [None, data])


def test_three_parties_agree():
    """A third party that only helps compute gets the same accuracy."""
    model, data, plaintext = classifier_task(seed=1, rows=30)
    out = run_in_threads(linear_classifier_accuracy, [model, data, None])
    assert [float(a) for a in out] == [plaintext] * 3


def test_errors_are_clear():
    """Misplaced inputs, out-of-range values and wrong generator counts name the problem."""
    model, data, _ = classifier_task(rows=5)
    with pytest.raises(ValueError, match="party 0 owns this input"):
        run_in_threads(linear_classifier_accuracy, [None, data])
    with pytest.raises(ValueError, match="outside the documented range"):
        run_in_threads(linear_classifier_accuracy, [{**model, "bias": [600.0, 0, 0]}, data])
    with pytest.raises(ValueError, match="passed a value, but party 1 owns it"):
        run_in_threads(lambda party, x: party.share_integers(x, owner=1).reveal(), [[1], [1]])
    with pytest.raises(ValueError, match="one generator per endpoint"):
        run_in_threads(truncated(1), [None, [1]], rng=[None, None])
    with pytest.raises(ValueError, match="at least 2 parties"):
        run_in_threads(truncated(1), [None])


class Tally:
    """Stands in for numpy's Generator on a one-element dry run: counts the random choices."""

    def __init__(self) -> None:
        self.bits, self.lock = 0, threading.Lock()

    def integers(self, low, high, size, dtype):
        with self.lock:
            self.bits += (int(high).bit_length() - 1) * int(np.prod(size[:-1], dtype=np.int64))
        return np.zeros(size, dtype=dtype)


class Odometer:
    """Stands in for numpy's Generator: element i of the run gets the i-th combination of all
    random choices (each draw takes the next bits of i), so elements start..stop-1 of a run
    over every combination enumerate each outcome once."""

    def __init__(self, start: int, stop: int) -> None:
        self.index = np.arange(start, stop, dtype=np.uint64)
        self.bits, self.lock = 0, threading.Lock()

    def integers(self, low, high, size, dtype):
        width = int(high).bit_length() - 1
        assert low == 0 and high == 2**width and size[-1] == len(self.index)
        rows = int(np.prod(size[:-1], dtype=np.int64))
        out = np.empty((rows, len(self.index)), dtype=np.uint64)
        with self.lock:
            for row in out:
                row[:] = (self.index >> np.uint64(self.bits)) & np.uint64(high - 1)
                self.bits += width
        return out.reshape(size)


def enumerated_views(program, private, *, encoding, chunk=2**20):
    """Party 0's view in every outcome of the randomness, for party 1's inputs ``private``
    (a tuple of ints), as sorted codes: with and without the last message (the output)."""

    def inputs(size):
        return [None, np.repeat(np.array(private)[:, None], size, axis=1)]

    tally = Tally()
    ThreadNetwork(2).run(program, inputs(1), encoding=encoding, rng=[tally] * 3)
    total = 2**tally.bits
    full, hidden = [], []
    for start in range(0, total, chunk):
        size = min(chunk, total - start)
        odometer = Odometer(start, start + size)
        network = ThreadNetwork(2, record=[0])
        network.run(program, inputs(size), encoding=encoding, rng=[odometer] * 3)
        assert odometer.bits == tally.bits  # the same choices as in the dry run
        rows = [r for m in network.transports[0].received for r in m.reshape(-1, size)]
        assert len(rows) * encoding.ring_bits <= 64
        code = np.zeros(size, np.uint64)
        for row in rows[:-1]:
            code = (code << np.uint64(encoding.ring_bits)) | row
        hidden.append(code)
        full.append((code << np.uint64(encoding.ring_bits)) | rows[-1])
    return np.sort(np.concatenate(full)), np.sort(np.concatenate(hidden))


def test_multiplication_views_are_identical_for_equal_products():
    """Z_8, party 1's x and y, all 2^21 choices (input shares, triple): party 0's view is
    distributed alike for 2 * 3 and 7 * 2 (both 6); for 1 * 1 only the revealed output differs."""

    def program(party, private):
        x = party.share_integers(None if private is None else private[0], owner=1)
        y = party.share_integers(None if private is None else private[1], owner=1)
        return (x * y).reveal()

    six, six_hidden = enumerated_views(program, (2, 3), encoding=Z8)
    also_six, _ = enumerated_views(program, (7, 2), encoding=Z8)
    one, one_hidden = enumerated_views(program, (1, 1), encoding=Z8)
    assert len(six) == 2**21 and np.array_equal(six, also_six)
    assert not np.array_equal(six, one) and np.array_equal(six_hidden, one_hidden)


def test_comparison_views_are_identical_for_equal_signs():
    """Z_8, all 2^22 choices (input share, mask and its bits, AND triple, daBit): party 0's
    view is distributed alike for 1 and 3; for -2 only the revealed output differs."""

    def program(party, private):
        x = party.share_integers(None if private is None else private[0], owner=1)
        return less_than_zero(x).reveal()

    one, one_hidden = enumerated_views(program, (1,), encoding=Z8)
    three, _ = enumerated_views(program, (3,), encoding=Z8)
    minus_two, minus_two_hidden = enumerated_views(program, (-2,), encoding=Z8)
    assert len(one) == 2**22 and np.array_equal(one, three)
    assert not np.array_equal(one, minus_two) and np.array_equal(one_hidden, minus_two_hidden)


def test_truncation_views_are_identical_for_every_input():
    """Z_16, all 2^16 choices: the opened x + 2^k + r looks the same for every x in range."""
    encoding = Encoding(ring_bits=4, fraction_bits=0, range_bits=2)

    def program(party, private):
        x = party.share_integers(None if private is None else private[0], owner=1)
        truncate(x, 1)  # nothing is revealed
        return np.zeros(0)

    first, _ = enumerated_views(program, (-4,), encoding=encoding)
    assert len(first) == 2**16
    for x in range(-3, 4):
        assert np.array_equal(enumerated_views(program, (x,), encoding=encoding)[0], first)


class ZeroMasks:
    """A broken dealer's generator: every mask is zero."""

    def integers(self, low, high, size, dtype):
        return np.zeros(size, dtype=dtype)


def guess_signs(messages, signs, encoding):
    """The attacker: every received value and every sum of two received ring values (which
    is how opened values are rebuilt), read as a signed number; for each, the rules
    'negative when below a threshold' (0, or a quantile) and their opposites. The best rule
    on the first half of the trials is scored on the second half."""
    rows = [r for m in messages for r in m.reshape(-1, len(signs))]
    ring_rows = [r for r in rows if r.max() > 1]
    view_rows = rows + [a + b for a, b in combinations(ring_rows, 2)]
    half = len(signs) // 2
    best_rule, best_score = None, -1.0
    for i, row in enumerate(view_rows):
        values = encoding.to_signed(row).astype(float)
        for threshold in [0.0, *np.quantile(values[:half], np.linspace(0.05, 0.95, 19))]:
            guess = values < threshold
            for flip in (False, True):
                score = np.mean((guess[:half] ^ flip) == signs[:half])
                if score > best_score:
                    best_rule, best_score = (i, threshold, flip), score
    i, threshold, flip = best_rule
    guess = encoding.to_signed(view_rows[i]).astype(float)[half:] < threshold
    return np.mean((guess ^ flip) == signs[half:])


def test_an_attacker_with_party_0s_view_guesses_signs_at_chance():
    """Party 0 uses everything it received during relu(x) * 0.5 to guess the signs of
    party 1's 2000 inputs: 50% against the real dealer, 100% if the dealer's masks are zero."""
    rng = np.random.default_rng(11)
    signs = rng.random(2000) < 0.5
    secret = np.where(signs, -1, 1) * rng.uniform(0.5, 8, 2000)

    def program(party, private):
        x = party.share(private, owner=1)
        relu(x) * 0.5  # nothing is revealed
        return np.zeros(0)

    def attack(dealer_rng):
        network = ThreadNetwork(2, record=[0])
        rngs = [np.random.default_rng(12), np.random.default_rng(13), dealer_rng]
        network.run(program, [None, secret], rng=rngs)
        return guess_signs(network.transports[0].received, signs, DEFAULT_ENCODING)

    assert abs(attack(np.random.default_rng(14)) - 0.5) < 0.07  # 1000 trials: 4.4 sigma
    assert attack(ZeroMasks()) == 1.0
