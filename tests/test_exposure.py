"""Each defence of module 02 against the attacker it is meant to stop: the analytic attack
steals the target's image from plain federated SGD, from secure aggregation with inconsistent
models and from the server's view of central DP; it gets no more than a guess from secure
aggregation, from an inconsistent model checked against a commitment, from the published
model under DP, and from the server's view of client-side noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from om_teach.attacks import exposure
from om_teach.attacks.gradient_leakage import reconstruction_error
from om_teach.data.digits import load_digits
from om_teach.fl.models import mlp
from om_teach.privacy.accounting import epsilon

LR, THRESHOLD = 0.1, 6


@pytest.fixture(scope="module")
def scenario():
    """The target holds one image; nine others hold eight each. Guessing the average digit
    is the error an attacker gets for free."""
    digits = load_digits(0)
    X, y = digits.X_train, digits.y_train
    shards = [(X[:1], y[:1])] + [
        (X[1 + 8 * i : 9 + 8 * i], y[1 + 8 * i : 9 + 8 * i]) for i in range(9)
    ]
    guess = reconstruction_error(X.mean(axis=0), X[:1])
    return mlp(0), shards, guess


def test_without_a_defence_the_server_steals_the_image(scenario):
    model, shards, _ = scenario
    result = exposure.no_defence(model, shards, learning_rate=LR)
    assert result.error < 1e-5 and result.epsilon == math.inf


def test_secure_aggregation_leaves_the_server_a_guess(scenario):
    model, shards, guess = scenario
    result = exposure.secure_aggregation(model, shards, threshold=THRESHOLD, learning_rate=LR)
    assert result.error > 0.8 * guess


def test_inconsistent_models_elude_secure_aggregation_unless_clients_check(scenario):
    model, shards, _ = scenario
    settings = {"threshold": THRESHOLD, "learning_rate": LR}
    attacked = exposure.model_inconsistency(model, shards, commitment=False, **settings)
    assert attacked.error < 1e-3
    checked = exposure.model_inconsistency(model, shards, commitment=True, **settings)
    assert checked.stolen is None and math.isnan(checked.error)
    assert "9 of 10 clients refused" in checked.detail and "t = 6" in checked.detail


def test_central_noise_protects_against_readers_not_against_the_server(scenario):
    model, shards, guess = scenario
    server, reader = exposure.differential_privacy(
        model, shards[:1], noise_at="server", clip_norm=0.1, noise_multiplier=1.0,
        learning_rate=LR, rng=np.random.default_rng(0),
    )  # fmt: skip
    assert server.error < 1e-5 and server.epsilon == math.inf
    assert reader.error > guess
    expected = epsilon(noise_multiplier=1.0, sample_rate=1.0, steps=1, delta=1e-5)
    assert reader.epsilon == pytest.approx(expected)


def test_client_noise_protects_against_the_server_at_a_higher_epsilon(scenario):
    model, shards, guess = scenario
    server, reader = exposure.differential_privacy(
        model, shards, noise_at="client", clip_norm=0.1, noise_multiplier=1.0,
        learning_rate=LR, rng=np.random.default_rng(0),
    )  # fmt: skip
    assert server.error > guess
    expected = epsilon(noise_multiplier=1.0 / math.sqrt(10), sample_rate=1.0, steps=1, delta=1e-5)
    assert server.epsilon == pytest.approx(expected) and server.epsilon > reader.epsilon
