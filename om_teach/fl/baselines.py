"""FedAvg's two yardsticks: centralized training on everyone's rows (what pooling the data
would give) and local-only training, each client on its own rows (what no collaboration gives).

:func:`compare` trains all three from the same start for the same rounds of one local epoch
and returns a metric after each round, for the plots of module 02 and the benchmark.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
from torch import nn

from om_teach.fl.client import local_train
from om_teach.fl.simulation import simulate
from om_teach.fl.strategy import FedAvg

Shards = Sequence[tuple[np.ndarray, np.ndarray]]
Metric = Callable[[nn.Module], float]


def centralized(
    model: nn.Module,
    shards: Shards,
    *,
    rounds: int,
    learning_rate: float,
    batch_size: int,
    evaluate: Metric,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` in place on all the shards' rows pooled, one epoch per round; the
    metric after each round."""
    X = np.concatenate([X for X, _ in shards])
    y = np.concatenate([y for _, y in shards])
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(rounds):
        local_train(model, X, y, learning_rate=learning_rate, batch_size=batch_size, epochs=1,
                    rng=rng)  # fmt: skip
        scores.append(evaluate(model))
    return scores


def local_only(
    model: nn.Module,
    shards: Shards,
    *,
    rounds: int,
    learning_rate: float,
    batch_size: int,
    evaluate: Metric,
    seed: int = 0,
) -> list[float]:
    """Train a copy of ``model`` on each shard alone, one epoch per round; the clients' mean
    metric after each round."""
    rng = np.random.default_rng(seed)
    copies = [copy.deepcopy(model) for _ in shards]
    scores = []
    for _ in range(rounds):
        for local, (X, y) in zip(copies, shards, strict=True):
            local_train(local, X, y, learning_rate=learning_rate, batch_size=batch_size,
                        epochs=1, rng=rng)  # fmt: skip
        scores.append(float(np.mean([evaluate(local) for local in copies])))
    return scores


def compare(
    model: nn.Module,
    shards: Shards,
    *,
    rounds: int,
    learning_rate: float,
    batch_size: int,
    evaluate: Metric,
    strategies: dict[str, FedAvg] | None = None,
    seed: int = 0,
) -> dict[str, list[float]]:
    """The metric after each round for centralized training, each federated strategy
    (``{"FedAvg": FedAvg()}`` by default, every client every round) and local-only training,
    all from ``model``'s parameters, which are left as they were."""
    strategies = {"FedAvg": FedAvg()} if strategies is None else strategies
    settings = {"rounds": rounds, "learning_rate": learning_rate, "batch_size": batch_size}
    curves = {"centralized": centralized(copy.deepcopy(model), shards, evaluate=evaluate,
                                         seed=seed, **settings)}  # fmt: skip
    for name, strategy in strategies.items():
        results = simulate(copy.deepcopy(model), shards, strategy, epochs=1, seed=seed,
                           evaluate=lambda m: {"metric": evaluate(m)}, **settings)  # fmt: skip
        curves[name] = [r.metrics["metric"] for r in results]
    curves["local only"] = local_only(model, shards, evaluate=evaluate, seed=seed, **settings)
    return curves
