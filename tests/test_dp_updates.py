"""om_teach.privacy.updates: clipping and noise for DP federated averaging."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from om_teach.privacy.updates import clip, dp_fedavg, noisy_sum


def _updates(n: int, dim: int, seed: int, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [scale * rng.normal(size=dim) * rng.uniform(0.1, 3) for _ in range(n)]


@settings(max_examples=60, deadline=None)
@given(
    update=hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(-1e6, 1e6)),
    clip_norm=st.floats(1e-3, 1e3),
)
def test_clip_bounds_the_norm_and_keeps_the_direction(update, clip_norm):
    """The clipped update has norm <= C, points the same way, and is unchanged if short."""
    clipped = clip(update, clip_norm=clip_norm)
    norm = np.linalg.norm(update)
    assert np.linalg.norm(clipped) <= clip_norm * (1 + 1e-12)
    if norm <= clip_norm:
        assert np.array_equal(clipped, update)
    else:
        assert np.linalg.norm(clipped) == pytest.approx(clip_norm, rel=1e-12)
        assert np.allclose(clipped * norm / clip_norm, update, rtol=1e-9, atol=1e-9)


def test_without_noise_dp_fedavg_is_the_mean_of_clipped_updates():
    """noise_multiplier 0 gives exactly the average of the clipped updates."""
    updates = _updates(7, 50, seed=0)
    got = dp_fedavg(updates, clip_norm=1.0, noise_multiplier=0.0, rng=np.random.default_rng(0))
    expected = np.mean([u * min(1.0, 1.0 / np.linalg.norm(u)) for u in updates], axis=0)
    assert np.allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_dp_fedavg_noise_std_is_z_times_c_over_n():
    """The average's noise has std noise_multiplier·C/n on every coordinate, mean 0."""
    n, z, c = 10, 1.1, 0.5
    updates = _updates(n, 200_000, seed=1)
    clipped_mean = np.mean([clip(u, clip_norm=c) for u in updates], axis=0)
    noise = dp_fedavg(updates, clip_norm=c, noise_multiplier=z, rng=np.random.default_rng(2))
    noise = noise - clipped_mean
    assert noise.std() == pytest.approx(z * c / n, rel=0.01)
    assert abs(noise.mean()) < 5 * z * c / n / math.sqrt(noise.size)


def test_noisy_sum_noise_std_is_z_times_c():
    """A trusted aggregator's noise on the sum has std noise_multiplier·C."""
    total = np.arange(100_000, dtype=float)
    noise = noisy_sum(total, clip_norm=2.0, noise_multiplier=0.8, rng=np.random.default_rng(3))
    assert (noise - total).std() == pytest.approx(1.6, rel=0.01)


def test_dp_fedavg_is_noisy_sum_divided_by_n():
    """Clipping per client then noisy_sum over the sum, divided by n, is dp_fedavg itself."""
    updates = _updates(5, 40, seed=4, scale=2.0)
    total = np.sum([clip(u, clip_norm=1.5) for u in updates], axis=0)
    via_sum = noisy_sum(total, clip_norm=1.5, noise_multiplier=1.2, rng=np.random.default_rng(5))
    direct = dp_fedavg(updates, clip_norm=1.5, noise_multiplier=1.2, rng=np.random.default_rng(5))
    assert np.allclose(direct, via_sum / 5, rtol=1e-12, atol=1e-15)


def test_one_client_moves_the_aggregate_by_at_most_the_sensitivity():
    """However large a client's raw update, it moves the clipped sum by at most C and, with
    n fixed, the average by at most 2C/n when it replaces another client: the sensitivities
    the noise is calibrated to."""
    c, n = 1.0, 8
    honest = _updates(n, 30, seed=6)
    rng = np.random.default_rng(7)
    total = np.sum([clip(u, clip_norm=c) for u in honest], axis=0)
    for k in range(n):
        attacker = rng.normal(size=30) * 1e9
        without = total - clip(honest[k], clip_norm=c)
        assert np.linalg.norm(total - without) <= c * (1 + 1e-12)
        replaced = [*honest[:k], attacker, *honest[k + 1 :]]
        moved = dp_fedavg(replaced, clip_norm=c, noise_multiplier=0, rng=rng) - total / n
        assert np.linalg.norm(moved) <= 2 * c / n * (1 + 1e-12)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"clip_norm": 0.0}, ValueError, "clip_norm must be a positive"),
        ({"clip_norm": math.nan}, ValueError, "clip_norm must be a positive"),
        ({"noise_multiplier": -0.1}, ValueError, "noise_multiplier must be a non-negative"),
        ({"noise_multiplier": math.inf}, ValueError, "noise_multiplier must be a non-negative"),
        ({"rng": np.random.RandomState(0)}, TypeError, "numpy Generator"),
    ],
)
def test_bad_parameters_are_refused(kwargs, error, message):
    """Non-positive clip norms, negative noise and foreign generators raise, naming the
    parameter."""
    args = {"clip_norm": 1.0, "noise_multiplier": 1.0, "rng": np.random.default_rng(0)} | kwargs
    with pytest.raises(error, match=message):
        dp_fedavg(_updates(3, 4, seed=0), **args)
    with pytest.raises(error, match=message):
        noisy_sum(np.zeros(4), **args)


def test_bad_updates_are_refused():
    """No updates, updates of different shapes and non-finite updates raise."""
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least one update"):
        dp_fedavg([], clip_norm=1, noise_multiplier=1, rng=rng)
    with pytest.raises(ValueError, match="same shape"):
        dp_fedavg([np.zeros(3), np.zeros(4)], clip_norm=1, noise_multiplier=1, rng=rng)
    with pytest.raises(ValueError, match="non-finite"):
        dp_fedavg([np.array([1.0, np.inf])], clip_norm=1, noise_multiplier=1, rng=rng)
    with pytest.raises(ValueError, match="non-finite"):
        noisy_sum(np.array([np.nan]), clip_norm=1, noise_multiplier=1, rng=rng)
