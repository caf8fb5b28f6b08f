"""Secure aggregation eluded by model inconsistency, and the commitment that stops it.

Ten clients each train one step on one digit. The server sends the target the real model and
the nine others a dead first layer: the secure sum then holds the target's first-layer change
alone, and the digit comes out of it. With a public commitment, the nine refuse the model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from om_teach.attacks.gradient_leakage import invert_first_layer
from om_teach.attacks.model_inconsistency import dead_first_layer
from om_teach.crypto.secagg import dequantize, quantize, run_secagg
from om_teach.fl.client import get_params, local_train, set_params
from om_teach.fl.commitment import ModelMismatch, check_model, commit
from om_teach.fl.strategy import flatten, unflatten

CLIENTS, THRESHOLD, TARGET_RANGE = 10, 6, 1 << 24


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _round(received, *, commitment=None):
    """Each client checks (when there is a commitment) and trains one step on its digit; the
    server gets only the secure sum of their changes."""
    data = load_digits()
    X, y = (data.data / 16.0).astype(np.float32), data.target
    worker, deltas = _model(), []
    for i, params in enumerate(received):
        if commitment is not None:
            try:
                check_model(params, commitment, who=f"client {i}")
            except ModelMismatch:
                continue
        set_params(worker, params)
        update = local_train(worker, X[i : i + 1], y[i : i + 1], learning_rate=0.1, batch_size=1,
                             steps=1, rng=np.random.default_rng(i))  # fmt: skip
        deltas.append(flatten(update.params) - flatten(params))
    inputs = [quantize(d, clipping_range=1.0, target_range=TARGET_RANGE) for d in deltas]
    total = run_secagg(inputs, THRESHOLD).total
    summed = dequantize(total, clipping_range=1.0, target_range=TARGET_RANGE, count=len(deltas))
    return unflatten(summed, received[0]), X[0]


def test_with_one_model_for_all_the_secure_sum_hides_the_target():
    real = get_params(_model())
    layers, target = _round([real] * CLIENTS)
    guess = invert_first_layer(layers[0], layers[1])
    assert np.abs(guess - target).mean() > 0.1


def test_a_dead_first_layer_for_the_others_reveals_the_target():
    real = get_params(_model())
    received = [real] + [dead_first_layer(real) for _ in range(CLIENTS - 1)]
    layers, target = _round(received)
    guess = invert_first_layer(layers[0], layers[1])
    np.testing.assert_allclose(guess, target, atol=1e-2)


def test_clients_checking_the_commitment_refuse_the_dead_model():
    real = get_params(_model())
    received = [real] + [dead_first_layer(real) for _ in range(CLIENTS - 1)]
    with pytest.raises(ModelMismatch, match="client 1 received model"):
        check_model(received[1], commit(real), who="client 1")
    with pytest.raises(ValueError, match="exceeds the 1 clients"):  # only the target trains
        _round(received, commitment=commit(real))


def test_the_commitment_is_the_content_address_of_the_parameters():
    real = get_params(_model())
    assert commit(real) == commit([p.copy() for p in real]) and commit(real).startswith("Qm")
    changed = [p.copy() for p in real]
    changed[-1][0] += 1e-6  # float32: the smallest change it holds near 0.1
    assert commit(changed) != commit(real)
