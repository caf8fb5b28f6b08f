"""How a federated server picks its clients and combines their models: FedAvg, and the adaptive
server optimizers FedAdam and FedYogi.

The verbs follow Flower's strategies: :meth:`FedAvg.configure` samples the clients of a
round, :meth:`FedAvg.aggregate` turns their models into the next global model. Parameters
are a list of numpy arrays, one per layer, as a torch ``state_dict`` gives them.

FedAvg (McMahan et al., AISTATS 2017) averages the clients' models weighted by their example
counts. FedAdam and FedYogi (Reddi et al., "Adaptive Federated Optimization", ICLR 2021,
Algorithm 2) treat the weighted mean of the clients' changes as a pseudo-gradient
Δ = Σ nᵢ(xᵢ − x) / Σ nᵢ and step the global model x with Adam or Yogi on it:

    m ← β₁ m + (1 − β₁) Δ
    v ← β₂ v + (1 − β₂) Δ²                        (Adam)
    v ← v − (1 − β₂) Δ² sign(v − Δ²)              (Yogi)
    x ← x + η m / (√v + τ)

with m starting at 0 and v at τ², and no bias correction, as in the paper.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

Params = list[np.ndarray]
Client = TypeVar("Client")


@dataclass(frozen=True)
class Update:
    """One client's model after its local training, and how many examples it trained on."""

    params: Params
    num_examples: int


def check_params(params: Sequence[np.ndarray], reference: Sequence[np.ndarray], who: str) -> Params:
    """``params`` as float arrays, if they have ``reference``'s shapes and are finite;
    ValueError naming ``who`` and the layer otherwise."""
    if len(params) != len(reference):
        raise ValueError(f"{who} sent {len(params)} layers, the model has {len(reference)}")
    checked = []
    for layer, (got, want) in enumerate(zip(params, reference, strict=True)):
        array = np.asarray(got, dtype=float)
        if array.shape != np.shape(want):
            raise ValueError(
                f"{who}: layer {layer} has shape {array.shape}, the model's is {np.shape(want)}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{who}: layer {layer} holds NaN or infinite values")
        checked.append(array)
    return checked


def flatten(params: Sequence[np.ndarray]) -> np.ndarray:
    """All layers as one vector, for clipping and masking."""
    return np.concatenate([np.ravel(p) for p in params])


def unflatten(vector: np.ndarray, like: Sequence[np.ndarray]) -> Params:
    """``vector`` cut back into layers shaped as ``like``'s."""
    ends = np.cumsum([np.size(p) for p in like])
    return [
        part.reshape(np.shape(p)) for part, p in zip(np.split(vector, ends[:-1]), like, strict=True)
    ]


def weighted_average(updates: Sequence[Update], reference: Sequence[np.ndarray]) -> Params:
    """Σ nᵢ xᵢ / Σ nᵢ, layer by layer, after checking every update against ``reference``."""
    if not updates:
        raise ValueError("no client updates to aggregate")
    checked = []
    for i, update in enumerate(updates):
        n = update.num_examples
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"client {i} reports {n!r} examples; each must train on at least 1")
        checked.append(check_params(update.params, reference, f"client {i}"))
    total = sum(int(u.num_examples) for u in updates)
    return [
        sum(u.num_examples * p[layer] for u, p in zip(updates, checked, strict=True)) / total
        for layer in range(len(reference))
    ]


class FedAvg:
    """Sample a fraction of the clients each round; average their models by example count."""

    def __init__(self, *, fraction: float = 1.0, min_clients: int = 1) -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise TypeError(f"fraction must be a number, not {type(fraction).__name__}")
        if not 0 < fraction <= 1:
            raise ValueError(f"the sample rate must lie in (0, 1], got {fraction}")
        if isinstance(min_clients, bool) or not isinstance(min_clients, int) or min_clients < 1:
            raise ValueError(f"min_clients must be a positive int, got {min_clients!r}")
        self.fraction, self.min_clients = fraction, min_clients

    def configure(
        self, round: int, clients: Sequence[Client], rng: np.random.Generator
    ) -> list[Client]:
        """The clients of ``round``: ⌈fraction · N⌉ of them (at least ``min_clients``), drawn
        without replacement."""
        if len(clients) < self.min_clients:
            raise ValueError(f"round {round} needs {self.min_clients} clients, got {len(clients)}")
        count = max(self.min_clients, math.ceil(self.fraction * len(clients)))
        chosen = rng.choice(len(clients), size=count, replace=False)
        return [clients[i] for i in sorted(chosen)]

    def client_side(self, update: Update, current: Params, clients: int) -> Update:
        """What each of the round's ``clients`` does to its update before sending it: nothing,
        for FedAvg (DP-FedAvg with noise at the clients adds its noise here)."""
        return update

    def aggregate(self, round: int, current: Params, updates: Sequence[Update]) -> Params:
        """The next global model from the round's updates."""
        return weighted_average(updates, current)


class FedOpt(FedAvg, ABC):
    """A server optimizer on the pseudo-gradient Δ (the weighted mean change of the clients);
    subclasses say how the second moment v is updated."""

    def __init__(
        self,
        *,
        eta: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
        fraction: float = 1.0,
        min_clients: int = 1,
    ) -> None:
        super().__init__(fraction=fraction, min_clients=min_clients)
        for name, value in (("eta", eta), ("tau", tau)):
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not (isinstance(value, int | float) and 0 <= value < 1):
                raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
        self.eta, self.beta_1, self.beta_2, self.tau = eta, beta_1, beta_2, tau
        self.m: Params | None = None
        self.v: Params | None = None

    @abstractmethod
    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """The next second moment v from the last and this round's pseudo-gradient."""

    def aggregate(self, round: int, current: Params, updates: Sequence[Update]) -> Params:
        current = check_params(current, current, "the global model")
        mean = weighted_average(updates, current)
        delta = [new - old for new, old in zip(mean, current, strict=True)]
        if self.m is None or self.v is None:
            self.m = [np.zeros_like(d) for d in delta]
            self.v = [np.full_like(d, self.tau**2) for d in delta]
        b1 = self.beta_1
        self.m = [b1 * m + (1 - b1) * d for m, d in zip(self.m, delta, strict=True)]
        self.v = [self.second_moment(v, d) for v, d in zip(self.v, delta, strict=True)]
        return [
            x + self.eta * m / (np.sqrt(v) + self.tau)
            for x, m, v in zip(current, self.m, self.v, strict=True)
        ]


class FedAdam(FedOpt):
    """Adam at the server: v ← β₂ v + (1 − β₂) Δ²."""

    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        return self.beta_2 * v + (1 - self.beta_2) * delta**2


class FedYogi(FedOpt):
    """Yogi at the server: v ← v − (1 − β₂) Δ² sign(v − Δ²), so v grows slowly and shrinks
    only as fast as the gradient does."""

    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        return v - (1 - self.beta_2) * delta**2 * np.sign(v - delta**2)
