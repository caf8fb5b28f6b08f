"""Clipping and noise for differentially private federated averaging (DP-FedAvg).

McMahan, Ramage, Talwar and Zhang, "Learning differentially private recurrent language models"
(ICLR 2018): each round, every sampled client's model update is clipped to L2 norm C, the
clipped updates are averaged, and Gaussian noise is added to the average.

Calibration, for n clients per round (fixed-size sampling, uniform weights). Adding or removing
one client's whole update changes the sum of clipped updates by at most C in L2 norm: C is the
sum's sensitivity. With noise multiplier z the sum gets N(0, (zC)² I); the average divides by
the fixed n, never by the number of updates that actually arrived (which would itself depend on
who took part), so it gets N(0, (zC/n)² I). This is the paper's fixed-denominator estimator
with qW = n. Each round is then a sampled Gaussian mechanism of noise multiplier z and
sampling rate q = n/N for N clients in the population; account for it with
:func:`om_teach.privacy.accounting.epsilon`. That accountant analyses Poisson sampling, as
McMahan et al. do; for sampling exactly n clients it is the customary approximation, and a
bound that is proved for fixed-size sampling replaces one client by another, which doubles the
sensitivity to 2C (Wang, Balle and Kasiviswanathan, AISTATS 2019).

Threat model. The guarantee is user-level: what is released after noise (the new global model,
every round of it) barely depends on whether any one client took part, whatever that client's
data. The party that adds the noise sees the exact clipped sum and is trusted to add the noise
and to keep the sum to itself: the server in :func:`dp_fedavg`, or, under secure aggregation
where nobody sees single updates, the trusted aggregator (the Helium capsule) that calls
:func:`noisy_sum`. There, nobody can check a single update's norm, so each client is trusted to
clip its own; one that does not can break its own protection, not its neighbours'. The noise
hides no trend the clients share, and the numpy generator is not cryptographically secure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _check_rng(rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng), got {rng!r}")


def _check_params(clip_norm: float, noise_multiplier: float) -> None:
    if not clip_norm > 0 or not math.isfinite(clip_norm):
        raise ValueError(f"clip_norm must be a positive finite number, got {clip_norm}")
    if not noise_multiplier >= 0 or not math.isfinite(noise_multiplier):
        raise ValueError(
            f"noise_multiplier must be a non-negative finite number, got {noise_multiplier}"
        )


def _finite_vector(update: np.ndarray, what: str) -> np.ndarray:
    u = np.asarray(update, dtype=float)
    if not np.all(np.isfinite(u)):
        raise ValueError(f"{what} has non-finite entries")
    return u


def clip(update: np.ndarray, *, clip_norm: float) -> np.ndarray:
    """``update`` scaled down to L2 norm at most ``clip_norm``; shorter updates are kept as
    they are, and the direction never changes."""
    _check_params(clip_norm, 0.0)
    u = _finite_vector(update, "the update")
    norm = float(np.linalg.norm(u))
    return u * (clip_norm / norm) if norm > clip_norm else u.copy()


def noisy_sum(
    sum_vector: np.ndarray, *, clip_norm: float, noise_multiplier: float, rng: np.random.Generator
) -> np.ndarray:
    """A sum of updates each clipped to ``clip_norm``, plus N(0, (noise_multiplier·clip_norm)²)
    on every coordinate: for a trusted aggregator that only ever sees the sum."""
    _check_params(clip_norm, noise_multiplier)
    _check_rng(rng)
    total = _finite_vector(sum_vector, "the sum")
    return total + rng.normal(0.0, noise_multiplier * clip_norm, size=total.shape)


def dp_fedavg(
    updates: Sequence[np.ndarray],
    *,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """The average of the clipped ``updates`` plus N(0, (noise_multiplier·clip_norm/n)²) on
    every coordinate, for n = len(updates) clients sampled this round.

    Equal to ``noisy_sum(sum of clipped updates, ...) / n`` with the same generator state.
    """
    _check_params(clip_norm, noise_multiplier)
    _check_rng(rng)
    if len(updates) == 0:
        raise ValueError("dp_fedavg needs at least one update")
    shapes = {np.shape(u) for u in updates}
    if len(shapes) > 1:
        raise ValueError(f"all updates must have the same shape, got {sorted(shapes)}")
    total = np.sum([clip(u, clip_norm=clip_norm) for u in updates], axis=0)
    return noisy_sum(total, clip_norm=clip_norm, noise_multiplier=noise_multiplier, rng=rng) / len(
        updates
    )
