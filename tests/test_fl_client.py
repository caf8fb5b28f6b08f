"""om_teach.fl.client: local training against known answers (centralized SGD, large-batch
gradient descent), parameters in and out, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from om_teach.fl.client import get_params, local_train, set_params
from om_teach.fl.strategy import FedAvg


def _digits(rows: int = 240):
    data = load_digits()
    return (data.data[:rows] / 16.0).astype(np.float32), data.target[:rows]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def test_one_client_equals_centralized_sgd():
    """Three FedAvg rounds of one epoch on one client are three epochs of minibatch SGD with
    the same shuffles, written out here with torch alone."""
    X, y = _digits()
    federated, central = _model(), _model()
    strategy, rng = FedAvg(), np.random.default_rng(1)
    params = get_params(federated)
    for round in range(3):
        set_params(federated, params)
        update = local_train(federated, X, y, learning_rate=0.1, batch_size=32, epochs=1, rng=rng)
        params = strategy.aggregate(round, params, [update])

    optimizer = torch.optim.SGD(central.parameters(), lr=0.1)
    shuffles = np.random.default_rng(1)
    for _ in range(3):
        order = shuffles.permutation(len(X))
        for start in range(0, len(X), 32):
            rows = order[start : start + 32]
            optimizer.zero_grad()
            nn.functional.cross_entropy(
                central(torch.tensor(X[rows])), torch.tensor(y[rows])
            ).backward()
            optimizer.step()
    for got, want in zip(params, get_params(central), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_equal_iid_clients_with_one_step_equal_large_batch_gradient_descent():
    """Four clients of 60 rows, one full-batch step each: their average is one gradient step
    on all 240 rows."""
    X, y = _digits()
    start = get_params(_model())
    updates = []
    for k in range(4):
        client = _model()
        set_params(client, start)
        rows = slice(60 * k, 60 * (k + 1))
        updates.append(
            local_train(
                client,
                X[rows],
                y[rows],
                learning_rate=0.5,
                batch_size=60,
                steps=1,
                rng=np.random.default_rng(k),
            )
        )
    federated = FedAvg().aggregate(0, start, updates)
    central = _model()
    set_params(central, start)
    nn.functional.cross_entropy(central(torch.tensor(X)), torch.tensor(y)).backward()
    with torch.no_grad():
        for p in central.parameters():
            p -= 0.5 * p.grad
    for got, want in zip(federated, get_params(central), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_steps_cycle_through_shuffled_epochs():
    X, y = _digits(50)
    model = _model()
    before = get_params(model)
    update = local_train(model, X, y, learning_rate=0.1, batch_size=16, steps=7,
                         rng=np.random.default_rng(0))  # fmt: skip
    assert update.num_examples == 50
    assert any(not np.array_equal(a, b) for a, b in zip(before, update.params, strict=True))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 1, "steps": 1}, "exactly one of epochs and steps"),
        ({}, "exactly one of epochs and steps"),
        ({"epochs": 0}, "positive int"),
        ({"epochs": 1, "batch_size": 0}, "batch_size"),
        ({"epochs": 1, "learning_rate": -1.0}, "learning_rate"),
    ],
)
def test_bad_training_settings_are_refused(options, message):
    X, y = _digits(20)
    settings = {"learning_rate": 0.1, "batch_size": 4, "rng": np.random.default_rng(0)} | options
    with pytest.raises(ValueError, match=message):
        local_train(_model(), X, y, **settings)


def test_a_client_with_no_rows_is_refused():
    with pytest.raises(ValueError, match="needs rows"):
        local_train(_model(), np.zeros((0, 64)), np.zeros(0), learning_rate=0.1, batch_size=4,
                    epochs=1, rng=np.random.default_rng(0))  # fmt: skip


def test_set_params_refuses_a_wrong_shape():
    params = get_params(_model())
    params[0] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="layer 0 has shape"):
        set_params(_model(), params)
