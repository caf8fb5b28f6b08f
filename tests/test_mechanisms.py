"""om_teach.privacy.mechanisms: Laplace and Gaussian noise, calibrated and checked against DP."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import gaussian_mechanism as reference
from scipy import integrate, stats

from om_teach.privacy.mechanisms import (
    analytic_gaussian_sigma,
    classical_gaussian_sigma,
    gaussian_delta,
    gaussian_mechanism,
    gaussian_sigma,
    laplace_mechanism,
    laplace_scale,
)


def _hockey_stick(sigma: float, sensitivity: float, epsilon: float) -> float:
    """sup over events S of P[N(Δ, σ²) in S] − e^ε P[N(0, σ²) in S], by integrating the
    densities over the set where the first exceeds e^ε times the second."""
    start = sigma**2 * epsilon / sensitivity + sensitivity / 2
    p, q = stats.norm(sensitivity, sigma), stats.norm(0, sigma)
    value, _ = integrate.quad(
        lambda x: p.pdf(x) - math.exp(epsilon) * q.pdf(x),
        start,
        start + 40 * sigma,
        epsabs=0,
        epsrel=1e-10,
        limit=200,
    )
    return value


def test_laplace_scale_is_sensitivity_over_epsilon():
    """b = Δ/ε."""
    assert laplace_scale(sensitivity=2.0, epsilon=0.5) == 4.0
    assert laplace_scale(sensitivity=0.0, epsilon=1.0) == 0.0


def test_laplace_noise_has_the_calibrated_distribution():
    """Each coordinate's noise is Laplace(0, Δ/ε): a KS test does not reject it."""
    value = np.linspace(-5, 5, 40_000)
    noisy = laplace_mechanism(value, sensitivity=3.0, epsilon=0.7, rng=np.random.default_rng(0))
    assert noisy.shape == value.shape
    assert stats.kstest(noisy - value, stats.laplace(scale=3.0 / 0.7).cdf).pvalue > 0.01
    assert stats.kstest(noisy - value, stats.laplace(scale=2.0 / 0.7).cdf).pvalue < 1e-6


def test_laplace_output_bounds_every_threshold_event_by_e_to_the_epsilon():
    """For neighbouring answers 0 and Δ, P[M(0) in S] / P[M(Δ) in S] stays within e^ε
    (up to sampling error) on every threshold event, and reaches it: the noise is no larger
    than it needs to be either."""
    epsilon, sensitivity, n = 1.0, 2.0, 400_000
    here = laplace_mechanism(
        np.zeros(n), sensitivity=sensitivity, epsilon=epsilon, rng=np.random.default_rng(1)
    )
    there = laplace_mechanism(
        np.full(n, sensitivity),
        sensitivity=sensitivity,
        epsilon=epsilon,
        rng=np.random.default_rng(2),
    )
    worst, slack = 0.0, 0.0
    for t in np.linspace(-6, 8, 29):
        for a, b in (
            (np.sum(here < t), np.sum(there < t)),
            (np.sum(there >= t), np.sum(here >= t)),
        ):
            if min(a, b) >= 2000:
                se = math.sqrt(1 / a + 1 / b)
                assert math.log(a / b) <= epsilon + 4 * se
                worst, slack = max(worst, math.log(a / b)), max(slack, 4 * se)
    assert worst >= epsilon - slack


def test_scalar_in_scalar_out_and_seeded():
    """A float query gives a float answer; the same seed gives the same answer."""
    a = laplace_mechanism(1.5, sensitivity=1, epsilon=1, rng=np.random.default_rng(7))
    b = laplace_mechanism(1.5, sensitivity=1, epsilon=1, rng=np.random.default_rng(7))
    assert isinstance(a, float) and a == b
    c = gaussian_mechanism(1.5, sensitivity=1, epsilon=1, delta=1e-5, rng=np.random.default_rng(7))
    assert isinstance(c, float) and c != 1.5


def test_classical_gaussian_sigma_known_answer():
    """σ = Δ·sqrt(2 ln(1.25/δ))/ε: Δ=1, ε=0.5, δ=1e-5 gives 9.68961..."""
    assert classical_gaussian_sigma(sensitivity=1.0, epsilon=0.5, delta=1e-5) == pytest.approx(
        9.689611, rel=1e-6
    )
    assert classical_gaussian_sigma(
        sensitivity=3.0, epsilon=0.5, delta=1e-5
    ) == 3 * classical_gaussian_sigma(sensitivity=1.0, epsilon=0.5, delta=1e-5)


@pytest.mark.parametrize("epsilon", [0.05, 0.5, 1.0, 3.0, 10.0])
@pytest.mark.parametrize("delta", [1e-3, 1e-5, 1e-10])
def test_analytic_gaussian_matches_dp_accounting(epsilon, delta):
    """The analytic σ agrees with Google's dp-accounting (Balle and Wang's calibration)."""
    expected = 2.5 * reference.get_sigma_gaussian(epsilon, delta)
    assert analytic_gaussian_sigma(sensitivity=2.5, epsilon=epsilon, delta=delta) == pytest.approx(
        expected, rel=1e-8
    )


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("delta", [1e-3, 1e-6])
def test_gaussian_sigmas_meet_the_dp_inequality_exactly_or_with_room(epsilon, delta):
    """At the analytic σ the largest violation of P[M(D) in S] <= e^ε P[M(D') in S] is
    exactly δ; the classical σ is larger and leaves it below δ."""
    analytic = analytic_gaussian_sigma(sensitivity=1.5, epsilon=epsilon, delta=delta)
    classical = classical_gaussian_sigma(sensitivity=1.5, epsilon=epsilon, delta=delta)
    assert _hockey_stick(analytic, 1.5, epsilon) == pytest.approx(delta, rel=1e-6)
    assert gaussian_delta(sigma=analytic, sensitivity=1.5, epsilon=epsilon) == pytest.approx(
        delta, rel=1e-9
    )
    assert analytic < classical
    assert _hockey_stick(classical, 1.5, epsilon) < delta


def test_gaussian_noise_has_the_calibrated_std():
    """The noise is N(0, σ²) with the chosen calibration's σ."""
    value = np.zeros(40_000)
    for calibration in ("analytic", "classical"):
        sigma = gaussian_sigma(sensitivity=2, epsilon=0.8, delta=1e-5, calibration=calibration)
        noise = gaussian_mechanism(
            value,
            sensitivity=2,
            epsilon=0.8,
            delta=1e-5,
            rng=np.random.default_rng(3),
            calibration=calibration,
        )
        assert stats.kstest(noise, stats.norm(scale=sigma).cdf).pvalue > 0.01
        assert stats.kstest(noise, stats.norm(scale=0.9 * sigma).cdf).pvalue < 1e-6


def test_zero_sensitivity_needs_no_noise():
    """A query no record can move is released exactly."""
    assert analytic_gaussian_sigma(sensitivity=0, epsilon=1, delta=1e-5) == 0.0
    assert laplace_mechanism(4.0, sensitivity=0, epsilon=1, rng=np.random.default_rng(0)) == 4.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sensitivity": 1, "epsilon": 0, "delta": 1e-5}, "epsilon must be a positive"),
        ({"sensitivity": 1, "epsilon": -1, "delta": 1e-5}, "epsilon must be a positive"),
        ({"sensitivity": 1, "epsilon": math.inf, "delta": 1e-5}, "epsilon must be a positive"),
        ({"sensitivity": -1, "epsilon": 0.5, "delta": 1e-5}, "sensitivity must be a non-neg"),
        ({"sensitivity": 1, "epsilon": 0.5, "delta": 0}, "delta must lie strictly between"),
        ({"sensitivity": 1, "epsilon": 0.5, "delta": 1}, "delta must lie strictly between"),
        ({"sensitivity": 1, "epsilon": 0.5, "delta": 1.5}, "delta must lie strictly between"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    """ε <= 0, δ outside (0, 1) and negative sensitivities raise, naming the parameter."""
    for calibrate in (classical_gaussian_sigma, analytic_gaussian_sigma):
        with pytest.raises(ValueError, match=message):
            calibrate(**kwargs)
    if "delta must" not in message:
        with pytest.raises(ValueError, match=message):
            laplace_scale(sensitivity=kwargs["sensitivity"], epsilon=kwargs["epsilon"])


def test_classical_calibration_refuses_epsilon_of_one_or_more():
    """Theorem A.1 is proved for ε < 1 only; the analytic calibration covers the rest."""
    with pytest.raises(ValueError, match="only for epsilon < 1"):
        classical_gaussian_sigma(sensitivity=1, epsilon=1.0, delta=1e-5)
    with pytest.raises(ValueError, match="only for epsilon < 1"):
        gaussian_mechanism(
            0.0,
            sensitivity=1,
            epsilon=2,
            delta=1e-5,
            rng=np.random.default_rng(0),
            calibration="classical",
        )
    with pytest.raises(ValueError, match="calibration must be"):
        gaussian_sigma(sensitivity=1, epsilon=0.5, delta=1e-5, calibration="optimal")


def test_bad_generators_and_values_are_refused():
    """The generator must be a numpy Generator, and the value finite."""
    with pytest.raises(TypeError, match="numpy Generator"):
        laplace_mechanism(1.0, sensitivity=1, epsilon=1, rng=np.random.RandomState(0))
    with pytest.raises(TypeError, match="numpy Generator"):
        gaussian_mechanism(1.0, sensitivity=1, epsilon=1, delta=1e-5, rng=0)
    with pytest.raises(ValueError, match="finite"):
        laplace_mechanism([1.0, math.nan], sensitivity=1, epsilon=1, rng=np.random.default_rng(0))
