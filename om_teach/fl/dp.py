"""DP-FedAvg (McMahan et al., "Learning Differentially Private Recurrent Language Models", ICLR
2018): each sampled client's change is clipped to C, the changes are averaged with equal weight
(so that one client moves the mean by at most C/m, for m clients), and Gaussian noise of
standard deviation zC/m goes on the mean. Every round is charged to a budget (ε at δ, through
:mod:`om_teach.privacy.accounting`), and a round past it is refused.

Where the noise is added decides whom it protects against:

* ``noise_at="server"`` (central DP): the server adds the noise to the mean. It protects every
  client against whoever reads the published models; the server itself sees each clipped
  change in the clear, and is trusted.
* ``noise_at="client"`` (distributed noise): each client adds N(0, (zC)²/m) to its own clipped
  change before sending it. The mean carries the same noise as above, so readers of the model
  get the same ε; against the server, who sees each change with noise zC/√m and knows who took
  part, a client has the ε of noise multiplier z/√m, without sampling amplification, over every
  round it joins (:attr:`DPFedAvg.epsilon_against_server`). Secure aggregation on top hides the
  single changes from the server as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from om_teach.fl.strategy import FedAvg, Params, Update, check_params, flatten, unflatten
from om_teach.privacy.accounting import Budget, epsilon
from om_teach.privacy.updates import clip, dp_fedavg


class DPFedAvg(FedAvg):
    """FedAvg of clipped, noised changes, with its privacy budget; see the module's notes."""

    def __init__(
        self,
        *,
        clip_norm: float,
        noise_multiplier: float,
        budget: float | None,
        delta: float = 1e-5,
        noise_at: str = "server",
        fraction: float = 1.0,
        min_clients: int = 1,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(fraction=fraction, min_clients=min_clients)
        if not (isinstance(clip_norm, int | float) and 0 < clip_norm < math.inf):
            raise ValueError(f"clip_norm must be a positive number, got {clip_norm!r}")
        if not (isinstance(noise_multiplier, int | float) and 0 < noise_multiplier < math.inf):
            raise ValueError(
                f"noise_multiplier must be a positive number, got {noise_multiplier!r}"
            )
        if budget is None:
            raise ValueError(
                f"a noise setting (noise_multiplier={noise_multiplier}) needs a budget: "
                "pass budget=ε, the most the run may spend at delta"
            )
        if noise_at not in ("server", "client"):
            raise ValueError(f"noise_at must be 'server' or 'client', got {noise_at!r}")
        self.clip_norm, self.noise_multiplier, self.noise_at = clip_norm, noise_multiplier, noise_at
        self.budget = Budget(epsilon=budget, delta=delta)
        self.rng = np.random.default_rng() if rng is None else rng  # the OS's entropy by default

    @property
    def rounds_joined(self) -> int:
        """The rounds charged so far (a client sampled every round joined them all)."""
        return len(self.budget.history)

    def privatize(
        self, update: Update, current: Params, clients: int, rng: np.random.Generator
    ) -> Update:
        """A client's side with ``noise_at="client"``: its clipped change plus its share of the
        noise, N(0, (zC)²/m) for m = ``clients`` in the round, as a model to send."""
        change = flatten(check_params(update.params, current, "this client")) - flatten(current)
        change = clip(change, clip_norm=self.clip_norm)
        std = self.noise_multiplier * self.clip_norm / math.sqrt(clients)
        change = change + rng.normal(0.0, std, change.shape)
        return Update(unflatten(flatten(current) + change, current), update.num_examples)

    def client_side(self, update: Update, current: Params, clients: int) -> Update:
        """With ``noise_at="client"``, :meth:`privatize` the update with this strategy's
        generator; with the noise at the server, the update as it is."""
        if self.noise_at == "server":
            return update
        return self.privatize(update, current, clients, self.rng)

    def aggregate(self, round: int, current: Params, updates: Sequence[Update]) -> Params:
        """The next model: ``current`` plus the equal-weight mean of the clipped changes, with
        the server's noise when ``noise_at="server"``. Once the updates are checked, the round
        is charged to the budget; BudgetExceeded refuses it, changing nothing."""
        if not updates:
            raise ValueError("no client updates to aggregate")
        start = flatten(current)
        changes = [
            flatten(check_params(u.params, current, f"client {i}")) - start
            for i, u in enumerate(updates)
        ]
        self.budget.spend(noise_multiplier=self.noise_multiplier, sample_rate=self.fraction)
        if self.noise_at == "server":
            mean = dp_fedavg(changes, clip_norm=self.clip_norm,
                             noise_multiplier=self.noise_multiplier, rng=self.rng)  # fmt: skip
        else:
            mean = np.mean(changes, axis=0)
        return unflatten(start + mean, current)

    @property
    def epsilon(self) -> float:
        """ε at δ against a reader of the published models, so far."""
        return self.budget.spent

    def epsilon_against_server(self, clients: int) -> float:
        """ε at δ against the server for a client that joined every round so far, with
        ``clients`` per round: infinite with the noise at the server."""
        if self.noise_at == "server":
            return math.inf
        if self.rounds_joined == 0:
            return 0.0
        return epsilon(
            noise_multiplier=self.noise_multiplier / math.sqrt(clients),
            sample_rate=1.0,
            steps=self.rounds_joined,
            delta=self.budget.delta,
        )
