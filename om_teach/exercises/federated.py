"""Judges for the federated-learning module's exercises: FedAvg's weighting, one FedAdam step
and the analytic reconstruction of an input from a first layer's gradients.

Every case is built here with numpy, so a judge needs neither torch nor the library's own
implementation of what it judges.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from om_teach.exercises import exercise


def _arrays(got, like: list[np.ndarray]) -> list[np.ndarray] | None:
    """``got`` as float arrays shaped like ``like``, or None when it is not."""
    try:
        arrays = [np.asarray(a, dtype=float) for a in got]
    except (TypeError, ValueError):
        return None
    if len(arrays) != len(like) or any(
        a.shape != b.shape for a, b in zip(arrays, like, strict=True)
    ):
        return None
    return arrays


@exercise("federated.fedavg")
def judge_fedavg(fedavg: Callable) -> str | None:
    """``fedavg(models, counts)``: the clients' models averaged, weighted by example counts."""
    rng = np.random.default_rng(2)
    for clients, counts in ((2, [1, 3]), (3, [10, 10, 10]), (1, [7]), (4, [1, 100, 5, 30])):
        shapes = [(3, 2), (3,), (2,)]
        models = [[rng.normal(size=s) for s in shapes] for _ in range(clients)]
        got = _arrays(fedavg([[a.copy() for a in m] for m in models], list(counts)), models[0])
        if got is None:
            return "return a list with one array per layer, each shaped like the clients' layer."
        weights = np.asarray(counts, dtype=float) / sum(counts)
        expected = [
            sum(w * m[layer] for w, m in zip(weights, models, strict=True)) for layer in range(3)
        ]
        if all(np.allclose(g, e) for g, e in zip(got, expected, strict=True)):
            continue
        plain = [np.mean([m[layer] for m in models], axis=0) for layer in range(3)]
        if len(set(counts)) > 1 and all(np.allclose(g, p) for g, p in zip(got, plain, strict=True)):
            return (
                "that is the plain mean: a client with more examples should pull the model "
                "further, in proportion to its count."
            )
        return "weight each client's layer by its count, and divide by the total count."
    return None


@exercise("federated.fedadam_step")
def judge_fedadam_step(fedadam_step: Callable) -> str | None:
    """``fedadam_step(x, delta, m, v, learning_rate, beta1, beta2, tau)`` → (x, m, v)."""
    rng = np.random.default_rng(3)
    for step in range(4):
        x, delta = rng.normal(size=5), rng.normal(scale=0.1, size=5)
        m = np.zeros(5) if step == 0 else rng.normal(scale=0.05, size=5)
        v = np.full(5, 1e-6) if step == 0 else rng.uniform(0.001, 0.01, size=5)
        settings = (0.05, 0.9, 0.99, 1e-3)
        got = fedadam_step(x.copy(), delta.copy(), m.copy(), v.copy(), *settings)
        if not isinstance(got, tuple | list) or len(got) != 3:
            return "return the three arrays (x, m, v) after the step, as a tuple."
        x_new, m_new, v_new = (np.asarray(a, dtype=float) for a in got)
        lr, beta1, beta2, tau = settings
        m_want = beta1 * m + (1 - beta1) * delta
        v_want = beta2 * v + (1 - beta2) * delta**2
        if not np.allclose(m_new, m_want):
            return "m is a moving average of the pseudo-gradient Δ: β₁·m + (1 − β₁)·Δ."
        if not np.allclose(v_new, v_want):
            return "v is a moving average of Δ², elementwise: β₂·v + (1 − β₂)·Δ²."
        if np.allclose(x_new, x - lr * m_want / (np.sqrt(v_want) + tau)):
            return "Δ already points the way the clients moved: add η·m/(√v + τ), do not subtract."
        if not np.allclose(x_new, x + lr * m_want / (np.sqrt(v_want) + tau)):
            return (
                "step with the new m and v, and no bias correction (Reddi et al., Algorithm 2): "
                "x + η·m / (√v + τ)."
            )
    return None


@exercise("federated.reconstruct")
def judge_reconstruct(reconstruct: Callable) -> str | None:
    """``reconstruct(weight_grad, bias_grad)``: the input behind one example's gradients of a
    fully connected layer (dW = δ·xᵀ, db = δ), or of any multiple of them."""
    from sklearn.datasets import load_digits

    images = load_digits().data / 16.0
    rng = np.random.default_rng(4)
    for case in range(5):
        x = images[rng.integers(len(images))]
        delta = rng.normal(size=16) * (rng.random(16) < 0.6)  # dead ReLU units give 0
        delta[case] = 0.0
        delta[rng.integers(16)] = 0.5
        scale = -0.1 if case % 2 else 1.0  # an SGD step is −η times the gradient
        got = reconstruct(scale * np.outer(delta, x), scale * delta)
        got = np.asarray(got, dtype=float)
        if got.shape != x.shape:
            return f"return one image: a vector of {x.size} pixels, like one row of the weights."
        if not np.all(np.isfinite(got)):
            return "a unit whose bias gradient is 0 carries nothing: pick a row where it is not."
        if not np.allclose(got, x, atol=1e-6):
            return "row i of the weight gradient is δᵢ·x, and δᵢ is bias gradient i."
    return None
