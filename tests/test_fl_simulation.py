"""om_teach.fl.simulation: rounds of many in-process clients, equal to the strategy applied to
the clients' own updates, and learning on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from om_teach.data.partition import iid
from om_teach.fl.client import get_params, local_train, set_params
from om_teach.fl.dp import DPFedAvg
from om_teach.fl.simulation import simulate
from om_teach.fl.strategy import FedAvg


def _digits_shards(clients: int):
    data = load_digits()
    X, y = (data.data / 16.0).astype(np.float32), data.target
    return [(X[rows], y[rows]) for rows in iid(len(X), clients, seed=0)], (X, y)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(64, 10)


def _accuracy(X, y):
    def evaluate(model: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            predicted = model(torch.tensor(X)).argmax(1).numpy()
        return {"accuracy": float(np.mean(predicted == y))}

    return evaluate


def test_a_round_of_a_thousand_clients_is_fedavg_of_their_updates():
    """One round, 1,000 clients on digits: the global model is the example-weighted mean of
    what each client trains from the same start, with the same random draws."""
    shards, _ = _digits_shards(1000)
    model = _model()
    start = get_params(model)
    [result] = simulate(model, shards, FedAvg(), rounds=1, learning_rate=0.1, batch_size=8,
                        steps=1, seed=3)  # fmt: skip
    assert len(result.clients) == 1000
    rng = np.random.default_rng(3)
    chosen = FedAvg().configure(0, list(range(1000)), rng)
    worker, updates = _model(), []
    for client in chosen:
        set_params(worker, start)
        X, y = shards[client]
        updates.append(local_train(worker, X, y, learning_rate=0.1, batch_size=8, steps=1, rng=rng))
    for got, want in zip(result.params, FedAvg().aggregate(0, start, updates), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_fedavg_learns_digits():
    shards, (X, y) = _digits_shards(20)
    results = simulate(_model(), shards, FedAvg(fraction=0.5), rounds=5, learning_rate=0.5,
                       batch_size=16, epochs=1, seed=0, evaluate=_accuracy(X, y))  # fmt: skip
    assert results[-1].metrics["accuracy"] > 0.85
    assert all(len(r.clients) == 10 for r in results)


def test_client_noise_is_added_by_each_client_in_the_simulation():
    """With the noise at the clients, each simulated client clips and noises its own change:
    the server's mean then carries noise z·C/m per coordinate, as with the noise at the server."""
    shards, _ = _digits_shards(4)
    moved = {}
    for where in ("server", "client"):
        dp = DPFedAvg(clip_norm=0.01, noise_multiplier=100.0, budget=1e6, noise_at=where,
                      rng=np.random.default_rng(0))  # fmt: skip
        model = _model()
        start = np.concatenate([p.ravel() for p in get_params(model)])
        [result] = simulate(model, shards, dp, rounds=1, learning_rate=0.1, batch_size=8, steps=1)
        moved[where] = np.concatenate([p.ravel() for p in result.params]) - start
    for change in moved.values():
        assert change.std() == pytest.approx(100.0 * 0.01 / 4, rel=0.1)


def test_bad_simulation_settings_are_refused():
    shards, _ = _digits_shards(4)
    with pytest.raises(ValueError, match="rounds must be a positive int"):
        simulate(_model(), shards, FedAvg(), rounds=0, learning_rate=0.1, batch_size=4, epochs=1)
    with pytest.raises(ValueError, match="at least one client"):
        simulate(_model(), [], FedAvg(), rounds=1, learning_rate=0.1, batch_size=4, epochs=1)
