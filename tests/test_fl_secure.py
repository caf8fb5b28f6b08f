"""om_teach.fl.secure: a FedAvg round through secure aggregation equals the plain round to the
quantization step; bad rounds are refused."""

from __future__ import annotations

import numpy as np
import pytest

from om_teach.fl.secure import SecAggFedAvg
from om_teach.fl.strategy import FedAvg, Update

MODEL = [np.zeros((4, 3)), np.zeros(3)]


def _updates(count: int, seed: int = 0) -> list[Update]:
    rng = np.random.default_rng(seed)
    return [
        Update(
            [rng.uniform(-0.5, 0.5, (4, 3)), rng.uniform(-0.5, 0.5, 3)], int(rng.integers(1, 50))
        )
        for _ in range(count)
    ]


def test_a_secure_round_equals_the_plain_round_to_the_quantization_step():
    updates = _updates(10)
    secure = SecAggFedAvg(threshold=6, max_examples=50, clipping_range=1.0)
    got = np.concatenate([np.ravel(p) for p in secure.aggregate(0, MODEL, updates)])
    want = np.concatenate([np.ravel(p) for p in FedAvg().aggregate(0, MODEL, updates)])
    total = sum(u.num_examples for u in updates)
    bound = len(updates) * secure.step() * secure.max_examples / total  # each rounding < 1 step
    assert np.max(np.abs(got - want)) <= bound
    assert np.max(np.abs(got - want)) > 0  # it did quantize


def test_fewer_clients_than_the_threshold_are_refused():
    with pytest.raises(ValueError, match="at least t=6 clients"):
        SecAggFedAvg(threshold=6, max_examples=50).aggregate(0, MODEL, _updates(5))


def test_a_client_reporting_too_many_examples_is_refused():
    updates = _updates(6)
    updates[2] = Update(updates[2].params, 51)
    with pytest.raises(
        ValueError, match=r"client 2 reports 51 examples; each must lie in \[1, 50\]"
    ):
        SecAggFedAvg(threshold=3, max_examples=50).aggregate(0, MODEL, updates)


def test_sampling_picks_at_least_the_threshold():
    chosen = SecAggFedAvg(threshold=8, max_examples=10, fraction=0.01).configure(
        0, list(range(100)), np.random.default_rng(0)
    )
    assert len(chosen) == 8
