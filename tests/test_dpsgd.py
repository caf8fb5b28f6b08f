"""om_teach.privacy.dpsgd: DP-SGD through opacus on a small logistic regression."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from om_teach.data import load_breast_cancer
from om_teach.privacy import accounting
from om_teach.privacy.dpsgd import train_private

DELTA = 1e-5


def _breast_cancer(batch_size: int = 32) -> tuple[DataLoader, torch.Tensor, torch.Tensor]:
    data = load_breast_cancer(seed=0)
    train = TensorDataset(
        torch.tensor(data.X_train, dtype=torch.float32), torch.tensor(data.y_train)
    )
    loader = DataLoader(train, batch_size=batch_size, generator=torch.Generator().manual_seed(0))
    return loader, torch.tensor(data.X_test, dtype=torch.float32), torch.tensor(data.y_test)


def _logistic_regression(features: int = 30) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(features, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.5)


def test_dpsgd_learns_and_reports_the_epsilon_of_the_steps_taken():
    """Three epochs beat the majority class on held-out rows; the steps counted are every
    batch of every epoch, and ε is the accountant's for exactly those steps."""
    loader, X_test, y_test = _breast_cancer()
    model, optimizer = _logistic_regression()
    result = train_private(
        model,
        optimizer,
        loader,
        epochs=3,
        delta=DELTA,
        max_grad_norm=1.0,
        noise_multiplier=1.0,
        noise_generator=torch.Generator().manual_seed(1),
    )
    assert result.model is model
    assert result.steps == 3 * len(loader) and result.sample_rate == 1 / len(loader)
    expected = accounting.epsilon(
        noise_multiplier=1.0, sample_rate=1 / len(loader), steps=3 * len(loader), delta=DELTA
    )
    assert result.epsilon == pytest.approx(expected, rel=1e-12) and result.delta == DELTA
    with torch.no_grad():
        accuracy = (model(X_test).argmax(dim=1) == y_test).float().mean().item()
    majority = max(y_test.float().mean().item(), 1 - y_test.float().mean().item())
    assert accuracy > 0.85 > majority + 0.15
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())


def test_target_epsilon_picks_the_noise_that_spends_it():
    """Given a target ε, the noise multiplier chosen spends just under it over all the
    epochs' steps."""
    loader, _, _ = _breast_cancer(batch_size=64)
    model, optimizer = _logistic_regression()
    result = train_private(
        model, optimizer, loader, epochs=2, delta=DELTA, max_grad_norm=1.0, target_epsilon=2.0
    )
    steps = 2 * len(loader)
    assert result.steps == steps
    spent = accounting.epsilon(
        noise_multiplier=result.noise_multiplier,
        sample_rate=1 / len(loader),
        steps=steps,
        delta=DELTA,
    )
    assert result.epsilon == pytest.approx(spent, rel=1e-12)
    assert 2.0 - 0.05 < spent <= 2.0


@pytest.mark.filterwarnings("ignore:Optimal order is the smallest alpha")
def test_one_record_cannot_move_the_model_more_than_clipping_allows():
    """A record with huge features, whose raw gradient is ~1e4, moves the weights no more
    than lr·(records sampled·C + noise)/(expected batch) over all steps: its per-record
    gradient was clipped, as the privacy claim requires."""
    torch.manual_seed(2)
    X = torch.randn(64, 5)
    X[0] *= 1e4
    y = torch.randint(0, 2, (64,))
    loader = DataLoader(TensorDataset(X, y), batch_size=16)
    model, optimizer = _logistic_regression(features=5)
    before = torch.cat([p.detach().clone().ravel() for p in model.parameters()])
    clip_norm, lr, sigma = 0.1, 0.5, 1e-3
    result = train_private(
        model,
        optimizer,
        loader,
        epochs=1,
        delta=DELTA,
        max_grad_norm=clip_norm,
        noise_multiplier=sigma,
    )
    after = torch.cat([p.detach().ravel() for p in model.parameters()])
    per_step = (64 * clip_norm + 10 * sigma * clip_norm) / 16
    assert torch.linalg.norm(after - before).item() <= lr * result.steps * per_step


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise_multiplier": None}, "exactly one of noise_multiplier and target_epsilon"),
        ({"target_epsilon": 1.0}, "exactly one of noise_multiplier and target_epsilon"),
        ({"noise_multiplier": 0.0}, "noise_multiplier must be a positive"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"max_grad_norm": -1.0}, "max_grad_norm must be a positive"),
        ({"delta": 0.0}, "delta must lie strictly between"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    """Each malformed parameter raises before any training, naming it."""
    loader, _, _ = _breast_cancer()
    model, optimizer = _logistic_regression()
    args = {"epochs": 1, "delta": DELTA, "max_grad_norm": 1.0, "noise_multiplier": 1.0} | kwargs
    with pytest.raises(ValueError, match=message):
        train_private(model, optimizer, loader, **args)
