"""om_teach.data.digits and om_teach.fl.baselines: the digits task, and FedAvg beside
centralized and local-only training on it."""

from __future__ import annotations

import numpy as np
import pytest

from om_teach.data.digits import load_digits
from om_teach.data.partition import dirichlet
from om_teach.fl.baselines import centralized, compare, local_only
from om_teach.fl.client import get_params
from om_teach.fl.models import accuracy, mlp


def test_digits_are_images_in_the_unit_range_split_without_overlap():
    digits = load_digits(3, test_fraction=0.25)
    assert digits.X_train.shape[1] == 64 and len(digits.X_test) == round(0.25 * 1797)
    assert digits.X_train.min() == 0.0 and digits.X_train.max() == 1.0
    train = {row.tobytes() for row in digits.X_train}
    assert sum(row.tobytes() in train for row in digits.X_test) < 5  # a few duplicate images
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(0, test_fraction=1.0)


def test_one_client_local_only_is_centralized_training():
    digits = load_digits(0)
    shards = [(digits.X_train[:200], digits.y_train[:200])]
    score = lambda m: accuracy(m, digits.X_test, digits.y_test)  # noqa: E731
    settings = {"rounds": 3, "learning_rate": 0.1, "batch_size": 16, "evaluate": score}
    assert local_only(mlp(0), shards, **settings) == centralized(mlp(0), shards, **settings)


def test_on_skewed_data_fedavg_beats_local_only_and_leaves_the_model_untouched():
    digits = load_digits(0)
    rows = dirichlet(digits.y_train, 10, 0.3, seed=0)
    shards = [(digits.X_train[r], digits.y_train[r]) for r in rows]
    model = mlp(0)
    before = get_params(model)
    curves = compare(model, shards, rounds=5, learning_rate=0.1, batch_size=16,
                     evaluate=lambda m: accuracy(m, digits.X_test, digits.y_test))  # fmt: skip
    assert list(curves) == ["centralized", "FedAvg", "local only"]
    assert all(len(c) == 5 for c in curves.values())
    assert curves["centralized"][-1] > curves["FedAvg"][-1] > curves["local only"][-1] + 0.2
    assert all(np.array_equal(a, b) for a, b in zip(before, get_params(model), strict=True))
