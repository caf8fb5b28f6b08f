"""What the analytic attack steals from one client's update under each defence of module 02,
each measured against the party that defence is meant to stop.

Every scenario is one round of federated SGD from the same model: each client takes one local
step on its shard (one image: the attack's best case), and client 0 is the target. The
attacker inverts the first layer of what it sees (:func:`~om_teach.attacks.gradient_leakage.
invert_first_layer`: a one-step change is −η times the gradient, and the ratio is the same),
and :func:`~om_teach.attacks.gradient_leakage.reconstruction_error` scores the theft against
the target's image. The attacker is the **server**, which sees what the clients send, or a
**model reader**, who sees only the published model before and after the round.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from om_teach.attacks.gradient_leakage import invert_first_layer, reconstruction_error
from om_teach.attacks.model_inconsistency import dead_first_layer
from om_teach.fl.client import get_params, local_train, set_params
from om_teach.fl.commitment import ModelMismatch, check_model, commit
from om_teach.fl.dp import DPFedAvg
from om_teach.fl.secure import SecAggFedAvg
from om_teach.fl.strategy import Params, Update

Shards = Sequence[tuple[np.ndarray, np.ndarray]]
TARGET_RANGE = 1 << 24  # quantization levels per coordinate: 10 clients' sum fits 32 bits


@dataclass(frozen=True)
class Exposure:
    """One defence against one attacker: the image stolen (None when the round was refused),
    its error against the target's image, and ε at δ against this attacker (∞ without noise)."""

    defence: str
    attacker: str
    stolen: np.ndarray | None
    error: float
    epsilon: float = math.inf
    detail: str = ""


def _steal(defence: str, attacker: str, change: Params, target: np.ndarray, **extra) -> Exposure:
    stolen = invert_first_layer(change[0], change[1])
    return Exposure(defence, attacker, stolen, reconstruction_error(stolen, target), **extra)


def _train(model: nn.Module, received: Params, shard, learning_rate: float) -> Update:
    """One local SGD step on the whole shard, from the model the client received."""
    worker = copy.deepcopy(model)
    set_params(worker, received)
    X, y = shard
    return local_train(worker, X, y, learning_rate=learning_rate, batch_size=len(X), steps=1,
                       rng=np.random.default_rng(0))  # fmt: skip


def _change(after: Sequence[np.ndarray], before: Sequence[np.ndarray]) -> Params:
    return [
        np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
        for a, b in zip(after, before, strict=True)
    ]


def no_defence(model: nn.Module, shards: Shards, *, learning_rate: float) -> Exposure:
    """Plain federated SGD: the server receives the target's model and subtracts its own."""
    current = get_params(model)
    update = _train(model, current, shards[0], learning_rate)
    return _steal("none", "server", _change(update.params, current), shards[0][0])


def secure_aggregation(
    model: nn.Module, shards: Shards, *, threshold: int, learning_rate: float
) -> Exposure:
    """Every client gets the same model; the server unmasks only the sum of all the changes
    (:class:`~om_teach.fl.secure.SecAggFedAvg`) and inverts the averaged change."""
    current = get_params(model)
    updates = [_train(model, current, shard, learning_rate) for shard in shards]
    strategy = SecAggFedAvg(threshold=threshold, max_examples=max(u.num_examples for u in updates),
                            target_range=TARGET_RANGE)  # fmt: skip
    after = strategy.aggregate(0, current, updates)
    return _steal(f"secure aggregation of {len(shards)}", "server", _change(after, current),
                  shards[0][0])  # fmt: skip


def model_inconsistency(
    model: nn.Module,
    shards: Shards,
    *,
    threshold: int,
    learning_rate: float,
    commitment: bool,
) -> Exposure:
    """Secure aggregation, but the server sends every client except the target a dead first
    layer (Pasquini et al., CCS 2022). With ``commitment``, each client first checks the model
    it received against the public commitment to the real one, and refuses a different one;
    a round that keeps fewer than ``threshold`` clients cannot be unmasked."""
    real = get_params(model)
    received = [real] + [dead_first_layer(real) for _ in shards[1:]]
    published = commit(real)
    updates, refused = [], []
    for i, (params, shard) in enumerate(zip(received, shards, strict=True)):
        if commitment:
            try:
                check_model(params, published, who=f"client {i}")
            except ModelMismatch:
                refused.append(i)
                continue
        update = _train(model, params, shard, learning_rate)
        # The client sends its change; the server adds it to the real model to aggregate.
        updates.append(Update(_change_onto(real, update.params, params), update.num_examples))
    defence = "secure aggregation, inconsistent models" + (", checked" if commitment else "")
    if len(updates) < threshold:
        detail = (f"{len(refused)} of {len(shards)} clients refused a model that was not the "
                  f"committed one; {len(updates)} cannot reach t = {threshold}")  # fmt: skip
        return Exposure(defence, "server", None, math.nan, detail=detail)
    strategy = SecAggFedAvg(threshold=threshold, max_examples=max(u.num_examples for u in updates),
                            target_range=TARGET_RANGE)  # fmt: skip
    after = strategy.aggregate(0, real, updates)
    return _steal(defence, "server", _change(after, real), shards[0][0])


def _change_onto(base: Params, after: Sequence[np.ndarray], before: Sequence[np.ndarray]) -> Params:
    return [b + d for b, d in zip(base, _change(after, before), strict=True)]


def differential_privacy(
    model: nn.Module,
    shards: Shards,
    *,
    noise_at: str,
    clip_norm: float,
    noise_multiplier: float,
    learning_rate: float,
    budget: float = 100.0,
    delta: float = 1e-5,
    rng: np.random.Generator | None = None,
) -> tuple[Exposure, Exposure]:
    """One DP-FedAvg round (:class:`~om_teach.fl.dp.DPFedAvg`) over ``shards``, attacked by the
    server (from the target's update as sent) and by a model reader (from the published
    change). ``rng`` draws the noise; by default the operating system's entropy."""
    rng = np.random.default_rng() if rng is None else rng
    strategy = DPFedAvg(clip_norm=clip_norm, noise_multiplier=noise_multiplier, budget=budget,
                        delta=delta, noise_at=noise_at, rng=rng)  # fmt: skip
    current = get_params(model)
    updates = [_train(model, current, shard, learning_rate) for shard in shards]
    if noise_at == "client":
        updates = [strategy.privatize(u, current, len(shards), rng) for u in updates]
    after = strategy.aggregate(0, current, updates)
    defence = f"DP, noise at the {noise_at} (z = {noise_multiplier:g}, C = {clip_norm:g})"
    target = shards[0][0]
    server = _steal(defence, "server", _change(updates[0].params, current), target,
                    epsilon=strategy.epsilon_against_server(len(shards)))  # fmt: skip
    reader = _steal(defence, "model reader", _change(after, current), target,
                    epsilon=strategy.epsilon)  # fmt: skip
    return server, reader
