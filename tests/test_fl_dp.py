"""om_teach.fl.dp: DP-FedAvg's clipping, noise and budget, with the noise at the server or at
the clients, and what each protects against."""

from __future__ import annotations

import math

import numpy as np
import pytest

from om_teach.fl.dp import DPFedAvg
from om_teach.fl.strategy import Update
from om_teach.privacy.accounting import BudgetExceeded, epsilon

MODEL = [np.zeros(3), np.zeros(1)]


def _update(values, n=10) -> Update:
    return Update([np.asarray(values[:3], float), np.asarray(values[3:], float)], n)


@pytest.mark.filterwarnings("ignore:Optimal order is the smallest alpha")  # ε is huge here
def test_changes_are_clipped_and_averaged_with_equal_weight():
    """A huge change counts as C, whatever its example count; the tiny noise is negligible."""
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=1e-3, budget=1e12, rng=np.random.default_rng(0))
    new = dp.aggregate(0, MODEL, [_update([100, 0, 0, 0], n=1000), _update([0, 0.5, 0, 0], n=1)])
    np.testing.assert_allclose(np.concatenate(new), [0.5, 0.25, 0, 0], atol=5e-3)


def test_server_noise_has_std_zc_over_m():
    m, z, c = 4, 2.0, 1.0
    dp = DPFedAvg(clip_norm=c, noise_multiplier=z, budget=1e12, rng=np.random.default_rng(1))
    model = [np.zeros(20_000), np.zeros(1)]
    updates = [Update([np.zeros(20_000), np.zeros(1)], 1)] * m
    noise = np.concatenate(dp.aggregate(0, model, updates))
    assert noise.std() == pytest.approx(z * c / m, rel=0.03)


def test_client_noise_sums_to_the_same_noise_and_the_server_adds_none():
    m, z, c = 4, 2.0, 1.0
    dp = DPFedAvg(clip_norm=c, noise_multiplier=z, budget=1e12, noise_at="client")
    model = [np.zeros(20_000), np.zeros(1)]
    rng = np.random.default_rng(2)
    sent = [
        dp.privatize(Update([np.zeros(20_000), np.zeros(1)], 1), model, m, rng) for _ in range(m)
    ]
    assert np.concatenate(sent[0].params).std() == pytest.approx(z * c / math.sqrt(m), rel=0.03)
    mean = np.concatenate(dp.aggregate(0, model, sent))
    np.testing.assert_allclose(mean, np.mean([np.concatenate(u.params) for u in sent], axis=0))
    assert mean.std() == pytest.approx(z * c / m, rel=0.03)


def test_each_round_is_charged_and_a_round_past_the_budget_is_refused():
    one = epsilon(noise_multiplier=1.0, sample_rate=0.5, steps=1, delta=1e-5)
    two = epsilon(noise_multiplier=1.0, sample_rate=0.5, steps=2, delta=1e-5)
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=1.0, budget=(one + two) / 2, fraction=0.5)
    before = dp.aggregate(0, MODEL, [_update([0.1, 0, 0, 0])])
    assert dp.epsilon == pytest.approx(one)
    with pytest.raises(BudgetExceeded):
        dp.aggregate(1, before, [_update([0.1, 0, 0, 0])])
    assert dp.epsilon == pytest.approx(one) and dp.rounds_joined == 1


def test_epsilon_against_the_server_depends_on_where_the_noise_is():
    """Server noise: the server sees clear changes (ε ∞ against it). Client noise: each change
    carries noise z/√m, with no amplification: a much larger ε than a model reader's."""
    server = DPFedAvg(clip_norm=1.0, noise_multiplier=2.0, budget=100.0)
    server.aggregate(0, MODEL, [_update([0.1, 0, 0, 0])] * 4)
    assert math.isinf(server.epsilon_against_server(4))
    client = DPFedAvg(clip_norm=1.0, noise_multiplier=2.0, budget=100.0, noise_at="client")
    client.aggregate(0, MODEL, [_update([0.1, 0, 0, 0])] * 4)
    against = client.epsilon_against_server(4)
    assert against == pytest.approx(
        epsilon(noise_multiplier=1.0, sample_rate=1.0, steps=1, delta=1e-5)
    )
    assert against > client.epsilon


def test_a_noise_setting_with_no_budget_is_refused():
    with pytest.raises(ValueError, match="needs a budget"):
        DPFedAvg(clip_norm=1.0, noise_multiplier=1.0, budget=None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"clip_norm": 0}, "clip_norm"),
        ({"noise_multiplier": -1}, "noise_multiplier"),
        ({"noise_at": "everywhere"}, "noise_at"),
        ({"fraction": 0}, r"sample rate must lie in \(0, 1\]"),
    ],
)
def test_bad_settings_are_refused(options, message):
    settings = {"clip_norm": 1.0, "noise_multiplier": 1.0, "budget": 1.0} | options
    with pytest.raises(ValueError, match=message):
        DPFedAvg(**settings)


def test_a_bad_update_is_refused_before_the_budget_is_charged():
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=1.0, budget=10.0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        dp.aggregate(0, MODEL, [_update([np.nan, 0, 0, 0])])
    assert dp.epsilon == 0
