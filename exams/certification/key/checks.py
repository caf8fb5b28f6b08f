"""Hidden checks for the certification exam (a SAMPLE key: real instructors keep theirs private).

For each question ``q`` of ``exam.toml``: ``cases_q(rng)`` draws the hidden inputs (a list of
JSON-safe argument lists) from the student's generator, and ``reference_q(*args)`` answers
them. Only numpy and the standard library are imported, so the key does not depend on the
library whose shortcuts the questions are built to defeat.
"""

from __future__ import annotations

import numpy as np

TOLERANCE = {"m02_q1_server_step": 1e-9, "m02_q2_fedadagrad_step": 1e-9}

# m02_q1: server learning rates; every case set holds at least one that is not 1.
SERVER_RATES = (0.5, 0.8, 1.5, 2.0, 3.0)


def _layers(rng: np.random.Generator) -> list[tuple[int, ...]]:
    """A small network's layer shapes: a weight matrix, its bias, and sometimes more."""
    rows, cols = int(rng.integers(2, 5)), int(rng.integers(2, 5))
    shapes = [(rows, cols), (rows,)]
    if rng.random() < 0.5:
        shapes.append((int(rng.integers(1, 4)),))
    return shapes


# m02_q1 -------------------------------------------------------------------------------------


def cases_m02_q1_server_step(rng: np.random.Generator) -> list[list]:
    """Global and client models of random shapes, unequal counts, and server rates not 1."""
    cases = []
    for case in range(4):
        shapes = _layers(rng)
        clients = int(rng.integers(1 if case == 0 else 2, 6))
        current = [rng.normal(size=s).tolist() for s in shapes]
        models = [[rng.normal(size=s).tolist() for s in shapes] for _ in range(clients)]
        counts = [int(c) for c in rng.integers(1, 500, size=clients)]
        cases.append([current, models, counts, float(rng.choice(SERVER_RATES))])
    return cases


def reference_m02_q1_server_step(global_model, client_models, counts, server_learning_rate):
    """x + η Σ nᵢ (xᵢ − x) / Σ nᵢ, per layer."""
    total = sum(counts)
    step = []
    for layer, x in enumerate(global_model):
        x = np.asarray(x, dtype=float)
        change = sum(
            n * (np.asarray(m[layer], dtype=float) - x)
            for n, m in zip(counts, client_models, strict=True)
        )
        step.append((x + server_learning_rate * change / total).tolist())
    return step


# m02_q2 -------------------------------------------------------------------------------------


def cases_m02_q2_fedadagrad_step(rng: np.random.Generator) -> list[list]:
    """A first step (m = 0, v = τ²) and later ones with grown moments."""
    cases = []
    for case in range(4):
        size = int(rng.integers(3, 9))
        tau = float(rng.choice([1e-3, 1e-2, 0.1]))
        m = np.zeros(size) if case == 0 else rng.normal(scale=0.05, size=size)
        v = np.full(size, tau**2) if case == 0 else rng.uniform(0.001, 0.5, size=size)
        cases.append([rng.normal(size=size).tolist(), rng.normal(scale=0.2, size=size).tolist(),
                      m.tolist(), v.tolist(), float(rng.choice([0.01, 0.1, 1.0])),
                      float(rng.choice([0.0, 0.5, 0.9])), tau])  # fmt: skip
    return cases


def reference_m02_q2_fedadagrad_step(x, delta, m, v, eta, beta1, tau):
    """Reddi et al., Algorithm 2, FedAdagrad: v accumulates Δ²."""
    x, delta, m, v = (np.asarray(a, dtype=float) for a in (x, delta, m, v))
    m = beta1 * m + (1 - beta1) * delta
    v = v + delta**2
    return [(x + eta * m / (np.sqrt(v) + tau)).tolist(), m.tolist(), v.tolist()]


# m02_q3 -------------------------------------------------------------------------------------


def cases_m02_q3_steal_pixels(rng: np.random.Generator) -> list[list]:
    """One SGD step on one standardized 8×8 image through a first layer of 6 to 16 units,
    some of which did not fire; pixels are ints in [0, 16]."""
    cases = []
    for _ in range(4):
        pixels = rng.integers(0, 17, size=64) * (rng.random(64) < 0.6)
        mean = rng.uniform(0, 8, size=64)
        std = rng.uniform(0.5, 6, size=64)
        standardized = (pixels - mean) / std
        units = int(rng.integers(6, 17))
        delta = rng.normal(size=units) * (rng.random(units) < 0.6)
        delta[int(rng.integers(units))] = float(rng.choice([-1, 1])) * rng.uniform(0.5, 2)
        rate = float(rng.choice([0.01, 0.1, 0.5]))
        weight = rng.normal(scale=0.3, size=(units, 64))
        bias = rng.normal(scale=0.1, size=units)
        after_weight = weight - rate * np.outer(delta, standardized)
        after_bias = bias - rate * delta
        cases.append([weight.tolist(), bias.tolist(), after_weight.tolist(), after_bias.tolist(),
                      mean.tolist(), std.tolist()])  # fmt: skip
    return cases


def reference_m02_q3_steal_pixels(weight_before, bias_before, weight_after, bias_after, mean, std):
    """The standardized input from the largest bias change's row, un-standardized and rounded."""
    weight = np.asarray(weight_after, dtype=float) - np.asarray(weight_before, dtype=float)
    bias = np.asarray(bias_after, dtype=float) - np.asarray(bias_before, dtype=float)
    row = int(np.argmax(np.abs(bias)))
    image = weight[row] / bias[row] * np.asarray(std) + np.asarray(mean)
    return [int(p) for p in np.clip(np.rint(image), 0, 16)]
