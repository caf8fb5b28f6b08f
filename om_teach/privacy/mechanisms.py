"""The Laplace and Gaussian mechanisms: answer a numeric query with calibrated noise.

Threat model. A curator holds the data and is trusted to compute the query exactly and to add
the noise with a generator the analyst does not control. The analyst (and anyone the answer is
shown to) may know every record but one, and may compute anything from the answer. Differential
privacy (Dwork, McSherry, Nissim and Smith, TCC 2006) then promises that the answer's
distribution barely depends on that one record: for data sets differing in one record and any
set S of answers, P[M(D) in S] <= e^ε P[M(D') in S] + δ.

That promise holds only if the sensitivity is right: the most one record can move the query,
in L1 norm for Laplace, L2 norm for Gaussian. It says nothing about facts that hold for the
population rather than the person, it weakens with every answer released (see
:mod:`om_teach.privacy.accounting`), and it does not hide the answer from the curator. numpy's
generators are not cryptographically secure: fine to teach with, while a production release
draws its noise from a secure source (and guards against floating-point attacks, Mironov 2012).

- Laplace (Dwork et al. 2006): noise of scale Δ₁/ε gives ε-DP (δ = 0).
- Gaussian, classical (Dwork and Roth 2014, Theorem A.1): σ = Δ₂·sqrt(2 ln(1.25/δ))/ε gives
  (ε, δ)-DP for ε < 1 only.
- Gaussian, analytic (Balle and Wang, "Improving the Gaussian mechanism for differential
  privacy", ICML 2018): the smallest σ for which the exact privacy profile
  δ(ε) = Φ(Δ/2σ − εσ/Δ) − e^ε Φ(−Δ/2σ − εσ/Δ) is at most δ; valid for every ε > 0.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import optimize, special


def _check(*, sensitivity: float, epsilon: float, delta: float | None = None) -> None:
    if not epsilon > 0 or not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon}")
    if not sensitivity >= 0 or not math.isfinite(sensitivity):
        raise ValueError(f"sensitivity must be a non-negative finite number, got {sensitivity}")
    if delta is not None and not 0 < delta < 1:
        raise ValueError(f"delta must lie strictly between 0 and 1, got {delta}")


def _noisy(value: float | np.ndarray, noise: np.ndarray) -> float | np.ndarray:
    return float(value + noise) if noise.ndim == 0 else value + noise


def _as_array(value: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng), got {rng!r}")
    x = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(x)):
        raise ValueError("the query's value must be finite")
    return x


def laplace_scale(*, sensitivity: float, epsilon: float) -> float:
    """The Laplace scale b = Δ₁/ε that makes a query of L1 sensitivity Δ₁ ε-DP."""
    _check(sensitivity=sensitivity, epsilon=epsilon)
    return sensitivity / epsilon


def laplace_mechanism(
    value: float | np.ndarray, *, sensitivity: float, epsilon: float, rng: np.random.Generator
) -> float | np.ndarray:
    """``value`` plus Laplace(Δ₁/ε) noise on each coordinate: ε-DP if ``sensitivity`` bounds
    the L1 change one record can make to the whole vector."""
    x = _as_array(value, rng)
    scale = laplace_scale(sensitivity=sensitivity, epsilon=epsilon)
    return _noisy(x, rng.laplace(0.0, scale, size=x.shape))


def classical_gaussian_sigma(*, sensitivity: float, epsilon: float, delta: float) -> float:
    """σ = Δ₂·sqrt(2 ln(1.25/δ))/ε (Dwork and Roth, Theorem A.1), proved only for ε < 1."""
    _check(sensitivity=sensitivity, epsilon=epsilon, delta=delta)
    if epsilon >= 1:
        raise ValueError(
            f"the classical Gaussian calibration holds only for epsilon < 1, got {epsilon}; "
            "use the analytic calibration instead"
        )
    return sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon


def gaussian_delta(*, sigma: float, sensitivity: float, epsilon: float) -> float:
    """The exact δ at which Gaussian noise of std ``sigma`` makes a query of L2 sensitivity
    Δ₂ (ε, δ)-DP (Balle and Wang 2018, Theorem 8)."""
    _check(sensitivity=sensitivity, epsilon=epsilon)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    return math.exp(_log_delta(sigma / sensitivity, epsilon)) if sensitivity > 0 else 0.0


def _log_delta(s: float, epsilon: float) -> float:
    """log δ(ε) for noise std s in units of the sensitivity, computed in log space."""
    log_a = special.log_ndtr(1 / (2 * s) - epsilon * s)
    log_b = epsilon + special.log_ndtr(-1 / (2 * s) - epsilon * s)
    return float(log_a + np.log1p(-np.exp(log_b - log_a)))


def analytic_gaussian_sigma(*, sensitivity: float, epsilon: float, delta: float) -> float:
    """The smallest σ with (ε, δ)-DP for L2 sensitivity Δ₂ (Balle and Wang 2018), found by
    solving δ(ε; σ) = δ for σ; δ(ε; σ) falls as σ grows."""
    _check(sensitivity=sensitivity, epsilon=epsilon, delta=delta)
    if sensitivity == 0:
        return 0.0
    target = math.log(delta)
    hi = 1.0
    while _log_delta(hi, epsilon) > target:
        hi *= 2
    lo = hi
    while _log_delta(lo, epsilon) < target:
        lo /= 2
    s = optimize.brentq(lambda s: _log_delta(s, epsilon) - target, lo, hi, xtol=1e-14, rtol=1e-13)
    return sensitivity * s


def gaussian_sigma(
    *,
    sensitivity: float,
    epsilon: float,
    delta: float,
    calibration: Literal["analytic", "classical"] = "analytic",
) -> float:
    """The Gaussian noise std for (ε, δ)-DP, analytic (tighter, any ε) by default."""
    if calibration == "analytic":
        return analytic_gaussian_sigma(sensitivity=sensitivity, epsilon=epsilon, delta=delta)
    if calibration == "classical":
        return classical_gaussian_sigma(sensitivity=sensitivity, epsilon=epsilon, delta=delta)
    raise ValueError(f"calibration must be 'analytic' or 'classical', got {calibration!r}")


def gaussian_mechanism(
    value: float | np.ndarray,
    *,
    sensitivity: float,
    epsilon: float,
    delta: float,
    rng: np.random.Generator,
    calibration: Literal["analytic", "classical"] = "analytic",
) -> float | np.ndarray:
    """``value`` plus N(0, σ²) noise on each coordinate: (ε, δ)-DP if ``sensitivity`` bounds
    the L2 change one record can make to the whole vector."""
    x = _as_array(value, rng)
    sigma = gaussian_sigma(
        sensitivity=sensitivity, epsilon=epsilon, delta=delta, calibration=calibration
    )
    return _noisy(x, rng.normal(0.0, sigma, size=x.shape))
