"""Federated training with every client in this process: one model object trains each sampled
client in turn, so that a round of 1,000 clients costs little more than their local steps."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from om_teach.fl.client import get_params, local_train, set_params
from om_teach.fl.strategy import FedAvg, Params


@dataclass(frozen=True)
class RoundResult:
    """One round: who trained, the model after it, what ``evaluate`` said of it, how long."""

    round: int
    clients: tuple[int, ...]
    params: Params = field(repr=False)
    metrics: dict[str, float]
    seconds: float


def simulate(
    model: nn.Module,
    shards: Sequence[tuple[np.ndarray, np.ndarray]],
    strategy: FedAvg,
    *,
    rounds: int,
    learning_rate: float,
    batch_size: int,
    epochs: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    progress: bool = False,
) -> list[RoundResult]:
    """Run ``rounds`` rounds from ``model``'s parameters over the clients' ``shards`` (one
    (X, y) each); ``evaluate`` scores the global model after each round. ``model`` is left
    holding the final global model."""
    from tqdm.auto import tqdm

    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive int, got {rounds!r}")
    if not shards:
        raise ValueError("a federation needs at least one client")
    rng = np.random.default_rng(seed)
    worker = copy.deepcopy(model)
    params = get_params(model)
    results = []
    for round in tqdm(range(rounds), desc="rounds", unit="round", disable=not progress):
        start = time.perf_counter()
        chosen = strategy.configure(round, list(range(len(shards))), rng)
        updates = []
        for client in chosen:
            set_params(worker, params)
            X, y = shards[client]
            local = {"epochs": epochs, "steps": steps, "rng": rng}
            update = local_train(worker, X, y, learning_rate=learning_rate,
                                 batch_size=batch_size, **local)  # fmt: skip
            updates.append(strategy.client_side(update, params, len(chosen)))
        params = strategy.aggregate(round, params, updates)
        set_params(model, params)
        metrics = evaluate(model) if evaluate is not None else {}
        results.append(
            RoundResult(round, tuple(chosen), params, metrics, time.perf_counter() - start)
        )
    return results
