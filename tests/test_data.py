"""om_teach.data: seeded splits, and partitions that lose and duplicate no row."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from om_teach.data import by_feature, dirichlet, iid, load_breast_cancer, load_diabetes


def test_diabetes_split_shapes_and_standardization():
    """442 rows x 10 features, cut 60/20/20, standardized on the training rows only."""
    data = load_diabetes(seed=0)
    assert data.n_features == 10 and data.feature_names[:3] == ("age", "sex", "bmi")
    sizes = (len(data.X_train), len(data.X_val), len(data.X_test))
    assert sum(sizes) == 442 and sizes == (266, 88, 88)
    assert np.allclose(data.X_train.mean(axis=0), 0, atol=1e-12)
    assert np.allclose(data.X_train.std(axis=0), 1)
    assert abs(data.y_train.mean()) < 1e-12 and abs(data.y_train.std() - 1) < 1e-12
    assert abs(data.X_test.mean()) > 1e-6  # held-out rows are not re-centred


def test_splits_are_deterministic_and_seed_dependent():
    a, b, c = load_diabetes(seed=1), load_diabetes(seed=1), load_diabetes(seed=2)
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_test, c.y_test)


def test_split_keeps_every_row_once():
    """Train, validation and test together are the raw rows, each exactly once."""
    data = load_diabetes(seed=5, standardize_target=False)
    targets = np.sort(np.concatenate([data.y_train, data.y_val, data.y_test]))
    from sklearn.datasets import load_diabetes as raw

    assert np.array_equal(targets, np.sort(raw().target))


def test_breast_cancer_is_binary_classification():
    data = load_breast_cancer(seed=0)
    assert data.n_features == 30
    assert set(np.unique(data.y_train)) == {0, 1}
    assert len(data.X_train) + len(data.X_val) + len(data.X_test) == 569


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="fractions"):
        load_diabetes(val_fraction=0.5, test_fraction=0.5)


def _assert_partition(parts, n):
    everything = np.concatenate(parts)
    assert len(everything) == n, "rows lost or duplicated"
    assert np.array_equal(np.sort(everything), np.arange(n))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 300), owners=st.integers(1, 20), seed=st.integers(0, 2**32 - 1))
def test_iid_partition_covers_every_row_once(n, owners, seed):
    """iid: every row in exactly one owner; sizes differ by at most one."""
    if owners > n:
        with pytest.raises(ValueError, match="more owners than rows"):
            iid(n, owners, seed)
        return
    parts = iid(n, owners, seed)
    _assert_partition(parts, n)
    sizes = [len(p) for p in parts]
    assert len(parts) == owners and max(sizes) - min(sizes) <= 1


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 300),
    owners=st.integers(1, 20),
    concentration=st.floats(0.01, 100),
    classes=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_partition_covers_every_row_once(n, owners, concentration, classes, seed):
    """Dirichlet skew: every row once, every owner at least one row, same seed same split."""
    labels = np.random.default_rng(seed).integers(0, classes, n)
    if owners > n:
        with pytest.raises(ValueError, match="more owners than rows"):
            dirichlet(labels, owners, concentration, seed)
        return
    parts = dirichlet(labels, owners, concentration, seed)
    _assert_partition(parts, n)
    assert all(len(p) > 0 for p in parts)
    again = dirichlet(labels, owners, concentration, seed)
    assert all(np.array_equal(p, q) for p, q in zip(parts, again, strict=True))


def test_dirichlet_skews_with_small_concentration():
    """A small concentration concentrates each class on few owners; a large one spreads it."""
    labels = np.repeat([0, 1], 500)

    def spread(concentration):
        parts = dirichlet(labels, 10, concentration, seed=0)
        return np.mean([abs(np.mean(labels[p]) - 0.5) for p in parts])

    assert spread(0.05) > 0.3 > 0.05 > spread(1000)


def test_dirichlet_bins_a_continuous_target():
    """The diabetes target (floats) is skewed by quantile bins."""
    data = load_diabetes(seed=0)
    parts = dirichlet(data.y_train, 10, 0.1, seed=0)
    _assert_partition(parts, len(data.y_train))
    means = [data.y_train[p].mean() for p in parts]
    assert max(means) - min(means) > 1.0  # owners see very different targets


@pytest.mark.parametrize("concentration", [0, -1.0, float("nan")])
def test_non_positive_concentration_is_refused(concentration):
    with pytest.raises(ValueError, match="concentration must be positive"):
        dirichlet(np.zeros(10), 2, concentration)


def test_more_owners_than_rows_is_refused():
    with pytest.raises(ValueError, match="cannot split 3 rows across 4 owners"):
        iid(3, 4)
    with pytest.raises(ValueError, match="cannot split 10 features across 11 owners"):
        by_feature(10, 11)


def test_by_feature_splits_columns():
    parts = by_feature(10, 3, seed=0)
    _assert_partition(parts, 10)
    assert sorted(len(p) for p in parts) == [3, 3, 4]
