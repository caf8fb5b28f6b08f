"""om_teach.fl.strategy: FedAvg, FedAdam and FedYogi against known answers, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from om_teach.fl.strategy import FedAdam, FedAvg, FedYogi, Update, weighted_average

MODEL = [np.zeros((2, 2)), np.zeros(2)]


def _update(value: float, n: int) -> Update:
    return Update([np.full((2, 2), value), np.full(2, -value)], n)


def test_fedavg_weights_by_example_count():
    """(1·10 + 4·30) / 40 = 3.25 in every weight."""
    new = FedAvg().aggregate(0, MODEL, [_update(1.0, 10), _update(4.0, 30)])
    np.testing.assert_allclose(new[0], 3.25)
    np.testing.assert_allclose(new[1], -3.25)


def test_fedadam_matches_its_update_rule_by_hand():
    """Two rounds from x = 0 with every client at 1, then at 1 + 0.5, checked by hand."""
    strategy = FedAdam(eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3)
    x = [np.zeros(1)]
    x = strategy.aggregate(0, x, [Update([np.ones(1)], 5)])
    # Δ = 1: m = 0.1, v = 0.99e-6 + 0.01 = 0.01000099, x = 0.1 · 0.1 / (√v + τ)
    v1 = 0.99 * 1e-6 + 0.01
    x1 = 0.1 * 0.1 / (math.sqrt(v1) + 1e-3)
    assert x[0][0] == pytest.approx(x1, rel=1e-12)
    x = strategy.aggregate(1, x, [Update([np.full(1, x1 + 0.5)], 5)])
    # Δ = 0.5: m = 0.09 + 0.05 = 0.14, v = 0.99 v1 + 0.01 · 0.25
    v2 = 0.99 * v1 + 0.01 * 0.25
    assert x[0][0] == pytest.approx(x1 + 0.1 * 0.14 / (math.sqrt(v2) + 1e-3), rel=1e-12)


def test_fedyogi_matches_its_update_rule_by_hand():
    """Yogi's v grows additively while Δ² > v: v = τ² + (1 − β₂) Δ² at the first step, and
    shrinks by (1 − β₂) Δ² once Δ² < v."""
    strategy = FedYogi(eta=0.1, beta_1=0.0, beta_2=0.9, tau=1e-3)
    x = strategy.aggregate(0, [np.zeros(1)], [Update([np.full(1, 2.0)], 1)])
    v1 = 1e-6 + 0.1 * 4.0
    assert x[0][0] == pytest.approx(0.1 * 2.0 / (math.sqrt(v1) + 1e-3), rel=1e-12)
    x0 = x[0][0]
    x = strategy.aggregate(1, x, [Update([np.full(1, x0 + 0.1)], 1)])
    v2 = v1 - 0.1 * 0.01  # Δ² = 0.01 < v1: sign(v − Δ²) = +1
    assert x[0][0] == pytest.approx(x0 + 0.1 * 0.1 / (math.sqrt(v2) + 1e-3), rel=1e-12)


def test_configure_samples_a_fraction_without_replacement():
    clients = list(range(1000))
    chosen = FedAvg(fraction=0.1).configure(0, clients, np.random.default_rng(0))
    assert len(chosen) == 100 == len(set(chosen))
    assert (
        len(FedAvg(fraction=0.001, min_clients=3).configure(0, clients, np.random.default_rng(1)))
        == 3
    )


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ([Update([np.zeros((3, 2)), np.zeros(2)], 1)], r"layer 0 has shape \(3, 2\)"),
        ([Update([np.zeros((2, 2))], 1)], "sent 1 layers, the model has 2"),
        ([Update([np.full((2, 2), np.nan), np.zeros(2)], 1)], "NaN or infinite"),
        ([Update([np.zeros((2, 2)), np.array([np.inf, 0])], 1)], "NaN or infinite"),
        ([_update(1.0, 0)], "at least 1"),
        ([], "no client updates"),
    ],
)
def test_bad_updates_get_clear_errors(updates, message):
    with pytest.raises(ValueError, match=message):
        weighted_average(updates, MODEL)


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, math.nan])
def test_a_sample_rate_outside_zero_one_is_refused(fraction):
    with pytest.raises(ValueError, match=r"sample rate must lie in \(0, 1\]"):
        FedAvg(fraction=fraction)


def test_bad_server_optimizer_settings_are_refused():
    with pytest.raises(ValueError, match="tau must be a positive number"):
        FedAdam(tau=0)
    with pytest.raises(ValueError, match=r"beta_2 must lie in \[0, 1\)"):
        FedYogi(beta_2=1.0)
