"""Privacy accounting for the sampled Gaussian mechanism, through opacus's RDP analysis.

DP-SGD and DP-FedAvg repeat one step many times: sample each record (or client) independently
with probability q, clip, add Gaussian noise of std σ·C. Each step is (α, RDP(α))-Rényi-DP for
every order α (Mironov, Talwar and Zhang, "Rényi differential privacy of the sampled Gaussian
mechanism", 2019); the RDPs of the steps add up; the total converts to (ε, δ)-DP. This module
calls the functions opacus's ``RDPAccountant`` delegates to, which convert with Balle et al.,
"Hypothesis testing interpretations and Rényi differential privacy" (AISTATS 2020, Thm 21):

    ε = min over α of  RDP(α) + log((α − 1)/α) − (log δ + log α)/(α − 1),

tighter than the classical RDP(α) + log(1/δ)/(α − 1) (Mironov 2017, Proposition 3).

Threat model. The (ε, δ) reported bounds what the whole sequence of released results reveals
about any one record (or client, under user-level sampling) to an adversary who sees all of
them and knows everything else. It is an upper bound, as tight as the grid of orders allows,
and it holds only if the steps really were what was accounted: Poisson sampling at rate q,
clipping to C, noise std σ·C from a source the adversary cannot predict. It does not cover what
is released outside the accountant (hyperparameter searches, the data set's size, an
unclipped contribution).
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Iterable

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as privacy_analysis
from opacus.accountants.utils import get_noise_multiplier

ORDERS: tuple[float, ...] = (*RDPAccountant.DEFAULT_ALPHAS, 128, 256, 512, 1024)
"""RDP orders searched: opacus's defaults (1.1 to 63) and, as in Google's dp-accounting,
128 to 1024, which large noise multipliers and small sampling rates need."""

_EDGE_WARNING = "Optimal order is the"


class BudgetExceeded(RuntimeError):
    """Raised by :meth:`Budget.spend` for a step that would take ε past the budget."""


def _check_step(noise_multiplier: float, sample_rate: float, steps: int) -> None:
    if not noise_multiplier > 0 or not math.isfinite(noise_multiplier):
        raise ValueError(
            f"noise_multiplier must be a positive finite number, got {noise_multiplier} "
            "(without noise, epsilon is infinite)"
        )
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must lie in (0, 1], got {sample_rate}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie strictly between 0 and 1, got {delta}")


@functools.lru_cache(maxsize=256)
def _one_step_rdp(noise_multiplier: float, sample_rate: float) -> tuple[float, ...]:
    return tuple(
        privacy_analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(ORDERS)
        )
    )


def _rdp(noise_multiplier: float, sample_rate: float, steps: int) -> np.ndarray:
    """RDP at every order in :data:`ORDERS` of ``steps`` sampled Gaussian steps: one step's,
    times ``steps`` (cached, since a run repeats the same step)."""
    return int(steps) * np.array(_one_step_rdp(float(noise_multiplier), float(sample_rate)))


def _epsilon(rdp: np.ndarray, delta: float) -> float:
    if not rdp.any():
        return 0.0
    eps, _ = privacy_analysis.get_privacy_spent(orders=list(ORDERS), rdp=rdp, delta=delta)
    return float(eps)


def epsilon(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε at ``delta`` after ``steps`` sampled Gaussian steps of the given noise multiplier
    and Poisson sampling rate (0 for no steps)."""
    _check_step(noise_multiplier, sample_rate, steps)
    _check_delta(delta)
    return _epsilon(_rdp(noise_multiplier, sample_rate, steps), delta)


def noise_multiplier_for(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    tolerance: float = 0.01,
) -> float:
    """The noise multiplier that keeps ``steps`` steps at ``sample_rate`` within
    ``target_epsilon`` at ``delta``: opacus's binary search, to within ``tolerance`` of ε
    and never above it."""
    if not target_epsilon > 0 or not math.isfinite(target_epsilon):
        raise ValueError(f"target_epsilon must be a positive finite number, got {target_epsilon}")
    _check_step(1.0, sample_rate, steps)
    if steps == 0:
        raise ValueError("steps must be at least 1: no steps need no noise")
    _check_delta(delta)
    with warnings.catch_warnings():  # the search probes orders at the grid's edge on purpose
        warnings.filterwarnings("ignore", message=_EDGE_WARNING)
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant="rdp",
                epsilon_tolerance=tolerance,
                alphas=list(ORDERS),
            )
        )


class Budget:
    """A run's privacy budget: composes the steps spent, possibly with different noise
    multipliers and sampling rates, and refuses any that would take ε at δ past ``epsilon``.

    RDP composes by adding, order by order, so the budget keeps one running RDP curve.
    ``history`` restores a budget from the ``(noise_multiplier, sample_rate, steps)`` spent so
    far, as :attr:`history` returns it.
    """

    def __init__(
        self,
        *,
        epsilon: float,
        delta: float = 1e-5,
        history: Iterable[tuple[float, float, int]] = (),
    ) -> None:
        if not epsilon > 0 or not math.isfinite(epsilon):
            raise ValueError(
                f"the budget's epsilon must be a positive finite number, got {epsilon}"
            )
        _check_delta(delta)
        self.epsilon, self.delta = float(epsilon), float(delta)
        self._history: list[tuple[float, float, int]] = []
        self._rdp = np.zeros(len(ORDERS))
        self._spent = 0.0
        for noise_multiplier, sample_rate, steps in history:
            self.spend(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """The ``(noise_multiplier, sample_rate, steps)`` spent so far, in order."""
        return list(self._history)

    @property
    def spent(self) -> float:
        """ε at :attr:`delta` of everything spent so far."""
        return self._spent

    @property
    def remaining(self) -> float:
        """How much ε the budget still allows."""
        return self.epsilon - self._spent

    def cost(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> float:
        """ε at :attr:`delta` that spending these steps would bring the total to."""
        _check_step(noise_multiplier, sample_rate, steps)
        return _epsilon(self._rdp + _rdp(noise_multiplier, sample_rate, steps), self.delta)

    def spend(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> float:
        """Record the steps and return the new total ε, or raise :class:`BudgetExceeded`
        (recording nothing) if the total would pass the budget."""
        _check_step(noise_multiplier, sample_rate, steps)
        rdp = self._rdp + _rdp(noise_multiplier, sample_rate, steps)
        total = _epsilon(rdp, self.delta)
        if total > self.epsilon:
            raise BudgetExceeded(
                f"{steps} step(s) at noise_multiplier={noise_multiplier}, "
                f"sample_rate={sample_rate} would bring epsilon to {total:.4g}, over the "
                f"budget of {self.epsilon:g} at delta={self.delta:g} "
                f"({self._spent:.4g} spent so far); refused"
            )
        self._history.append((float(noise_multiplier), float(sample_rate), int(steps)))
        self._rdp, self._spent = rdp, total
        return total
