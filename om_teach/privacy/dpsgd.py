"""DP-SGD for local training, through opacus (Abadi et al., "Deep learning with differential
privacy", CCS 2016).

Each step samples every training record independently with probability q = 1/len(loader)
(Poisson sampling), clips each record's gradient to L2 norm ``max_grad_norm``, sums, adds
Gaussian noise of std noise_multiplier·max_grad_norm and takes the optimizer step. opacus's
:class:`~opacus.PrivacyEngine` does the sampling, the per-record gradients, the clipping and
the noise, and its RDP accountant records every step taken; ε is read off it over the orders
of :mod:`om_teach.privacy.accounting`, so that it agrees with that module.

Threat model. The guarantee is record-level: the trained model, and every intermediate model
along the way, barely depends on any one training record, against an adversary who sees all of
them and knows every other record. The data owner who trains is trusted: it sees its data in
the clear and must run the steps as accounted. Not covered: a person with many records (each
counts separately), choices made by looking at the data (hyperparameters, early stopping on a
validation set that is not private), the number of records (treated as public), and the noise's
source, torch's PRNG, which is not cryptographically secure (opacus's ``secure_mode`` is the
production option). In federated learning this protects a client's records from the server; it
is not the user-level protection of :mod:`om_teach.privacy.updates`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader

from om_teach.privacy import accounting


@dataclass(frozen=True)
class PrivateTraining:
    """What :func:`train_private` returns: the trained model and the privacy it spent."""

    model: nn.Module
    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int


def train_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: DataLoader,
    *,
    epochs: int,
    delta: float,
    max_grad_norm: float,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    noise_generator: torch.Generator | None = None,
) -> PrivateTraining:
    """Train ``model`` in place with DP-SGD for ``epochs`` passes over ``data_loader``.

    Give either ``noise_multiplier`` or ``target_epsilon``; with the latter the noise
    multiplier is the smallest that keeps ε at ``delta`` within it after all the epochs. The
    loader yields ``(inputs, targets)`` batches; the data set's size is treated as public.
    Seed the loader's ``generator`` and pass ``noise_generator`` for a reproducible run.
    """
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ValueError("give exactly one of noise_multiplier and target_epsilon")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not max_grad_norm > 0 or not math.isfinite(max_grad_norm):
        raise ValueError(f"max_grad_norm must be a positive finite number, got {max_grad_norm}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie strictly between 0 and 1, got {delta}")
    sample_rate = 1 / len(data_loader)
    if target_epsilon is not None:
        noise_multiplier = accounting.noise_multiplier_for(
            target_epsilon=target_epsilon,
            delta=delta,
            sample_rate=sample_rate,
            steps=epochs * len(data_loader),
        )
    elif not noise_multiplier > 0 or not math.isfinite(noise_multiplier):
        raise ValueError(
            f"noise_multiplier must be a positive finite number, got {noise_multiplier}"
        )

    with warnings.catch_warnings():  # the module docstring says the RNG is not a secure one
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant="rdp")
    private_model, private_optimizer, private_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=data_loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        noise_generator=noise_generator,
    )
    private_model.train()
    with warnings.catch_warnings():  # opacus's hooks fire on inputs that need no gradient
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(epochs):
            for inputs, targets in private_loader:
                private_optimizer.zero_grad()
                criterion(private_model(inputs), targets).backward()
                private_optimizer.step()

    return PrivateTraining(
        model=private_model.to_standard_module(),
        epsilon=float(engine.accountant.get_epsilon(delta=delta, alphas=list(accounting.ORDERS))),
        delta=delta,
        noise_multiplier=noise_multiplier,
        sample_rate=sample_rate,
        steps=sum(steps for _, _, steps in engine.accountant.history),
    )
