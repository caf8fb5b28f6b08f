"""Reference and wrong answers to the federated-learning notebook's self-checks."""

from __future__ import annotations

import numpy as np


def fedavg(models, counts):
    total = sum(counts)
    return [
        sum(n * model[layer] for n, model in zip(counts, models, strict=True)) / total
        for layer in range(len(models[0]))
    ]


def fedavg_plain_mean(models, counts):
    """Wrong: ignores the example counts."""
    return [np.mean([m[layer] for m in models], axis=0) for layer in range(len(models[0]))]


def fedavg_first_layer(models, counts):
    """Wrong: drops every layer but the first."""
    return fedavg(models, counts)[:1]


def fedadam_step(x, delta, m, v, learning_rate, beta1, beta2, tau):
    m = beta1 * m + (1 - beta1) * delta
    v = beta2 * v + (1 - beta2) * delta**2
    return x + learning_rate * m / (np.sqrt(v) + tau), m, v


def fedadam_descends(x, delta, m, v, learning_rate, beta1, beta2, tau):
    """Wrong: steps against the pseudo-gradient, as if it were a loss gradient."""
    x_new, m, v = fedadam_step(x, delta, m, v, learning_rate, beta1, beta2, tau)
    return 2 * x - x_new, m, v


def fedadam_bias_corrected(x, delta, m, v, learning_rate, beta1, beta2, tau):
    """Wrong: Adam's bias correction, which Reddi et al.'s Algorithm 2 leaves out."""
    m = beta1 * m + (1 - beta1) * delta
    v = beta2 * v + (1 - beta2) * delta**2
    return x + learning_rate * (m / (1 - beta1)) / (np.sqrt(v / (1 - beta2)) + tau), m, v


def reconstruct(weight_grad, bias_grad):
    row = int(np.argmax(np.abs(bias_grad)))
    return weight_grad[row] / bias_grad[row]


def reconstruct_first_row(weight_grad, bias_grad):
    """Wrong: row 0 may belong to a unit that did not fire."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return weight_grad[0] / bias_grad[0]


def reconstruct_weights_only(weight_grad, bias_grad):
    """Wrong: the weight row alone is the input times δᵢ."""
    return weight_grad[int(np.argmax(np.abs(bias_grad)))]


REFERENCE = {
    "federated.fedavg": fedavg,
    "federated.fedadam_step": fedadam_step,
    "federated.reconstruct": reconstruct,
}
WRONG = {
    "federated.fedavg": [fedavg_plain_mean, fedavg_first_layer],
    "federated.fedadam_step": [fedadam_descends, fedadam_bias_corrected],
    "federated.reconstruct": [reconstruct_first_row, reconstruct_weights_only],
}
