"""om_teach.attacks.gradient_leakage: a shared gradient gives its digits away, exactly at batch
size 1 through a fully connected first layer, and by optimisation for small batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from om_teach.attacks.gradient_leakage import (
    analytic_reconstruction,
    infer_labels,
    optimisation_attack,
    reconstruction_error,
    shared_gradient,
)
from om_teach.fl.models import mlp


def _digits():
    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 10))


def test_the_analytic_attack_recovers_one_image_exactly():
    X, y = _digits()
    model = _model()
    stolen = analytic_reconstruction(model, shared_gradient(model, X[:1], y[:1]))
    np.testing.assert_allclose(stolen, X[0], atol=1e-4)


def test_with_a_batch_the_analytic_attack_gives_a_mix():
    X, y = _digits()
    model = _model()
    stolen = analytic_reconstruction(model, shared_gradient(model, X[:8], y[:8]))
    assert min(np.abs(stolen - X[i]).max() for i in range(8)) > 0.05


def test_labels_come_from_the_last_bias_gradient():
    X, y = _digits()
    model = _model()
    batch = [0, 1, 2]  # digits 0, 1, 2: distinct labels
    gradient = shared_gradient(model, X[batch], y[batch])
    assert sorted(infer_labels(model, gradient, 3)) == sorted(y[batch])


def test_repeated_labels_are_counted_from_the_bias_gradient():
    """Exact on batches up to 16 (with repeats); an estimate, off by one label at most, at 32."""
    X, y = _digits()
    model = mlp(0)
    for size in (1, 8, 16, 32):
        labels = infer_labels(model, shared_gradient(model, X[:size], y[:size]), size)
        wrong = np.abs(np.bincount(labels, minlength=10) - np.bincount(y[:size], minlength=10))
        assert len(labels) == size and wrong.sum() <= (0 if size <= 16 else 2), size


def test_the_optimisation_attack_recovers_a_small_batch():
    X, y = _digits()
    model = _model()
    stolen, labels = optimisation_attack(model, shared_gradient(model, X[:1], y[:1]),
                                         batch_size=1, shape=(64,), iterations=200)  # fmt: skip
    assert labels.tolist() == [y[0]]
    assert np.abs(stolen[0] - X[0]).mean() < 0.05


def test_the_analytic_attack_needs_a_linear_first_layer():
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(124, 10))
    with pytest.raises(ValueError, match=r"first layer nn\.Linear with a bias"):
        analytic_reconstruction(model, [torch.zeros(1)])


def test_a_single_label_is_read_off_a_trained_model_too():
    """Training skews the model's mean prediction, which the count estimate uses; at batch
    size 1 the sign of the bias gradient decides alone."""
    X, y = _digits()
    model = mlp(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(torch.tensor(X[:500])), torch.tensor(y[:500])).backward()
        optimizer.step()
    for i in range(500, 600):
        assert infer_labels(model, shared_gradient(model, X[i : i + 1], y[i : i + 1]), 1) == [y[i]]


def test_larger_batches_hide_more_but_not_all():
    """iDLG, knowing nothing but the model and the gradient, recovers 4 images to within a few
    grey levels, and does worse at 32; both beat the analytic attack's mix."""
    X, y = _digits()
    model = mlp(0)
    errors = {}
    for size in (4, 32):
        gradient = shared_gradient(model, X[:size], y[:size])
        stolen, _ = optimisation_attack(model, gradient, batch_size=size, shape=(64,),
                                        iterations=200)  # fmt: skip
        mixed = analytic_reconstruction(model, gradient)
        errors[size] = reconstruction_error(stolen, X[:size])
        assert errors[size] < reconstruction_error(mixed, X[:size])
    assert errors[4] < 0.1 < errors[32]


def test_the_reconstruction_error_matches_each_original_to_its_closest_theft():
    originals = np.array([[0.0, 1.0], [1.0, 1.0]])
    assert reconstruction_error(originals[::-1], originals) == 0.0
    assert reconstruction_error([[0.0, 1.0]], originals) == 0.25  # (0 + 0.5) / 2
    assert reconstruction_error([[-3.0, 7.0]], originals[:1]) == 0.0  # clipped to [0, 1]
    with pytest.raises(ValueError, match="cannot match"):
        reconstruction_error(np.zeros((1, 3)), originals)
