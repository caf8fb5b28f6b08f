"""Gradient leakage: what a shared gradient gives away about the examples it was computed on.

Two attacks on a model whose first layer is fully connected, y = W x + b:

* :func:`analytic_reconstruction`, exact at batch size 1. The gradient of the loss on row i of
  W is ∂L/∂bᵢ · xᵀ, so any row with ∂L/∂bᵢ ≠ 0 divided by ∂L/∂bᵢ is the input itself (Phong et
  al., 2017; Geiping et al., "Inverting Gradients", NeurIPS 2020). With a batch, the same ratio
  gives a mix of the batch's inputs.
* :func:`optimisation_attack`, iDLG (Zhao et al., 2020, after DLG: Zhu et al., NeurIPS 2019):
  read the batch's labels off the last layer's bias gradient, then fit dummy inputs whose
  gradient matches the shared one, with L-BFGS. It works for small batches.

:func:`reconstruction_error` scores either attack against the batch it stole from.

Both take only what a server receives in plain federated SGD: the model and one gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def shared_gradient(model: nn.Module, X: np.ndarray, y: np.ndarray) -> list[torch.Tensor]:
    """The gradient of the mean cross-entropy on (X, y), layer by layer: what a client shares."""
    model.zero_grad()
    loss = nn.functional.cross_entropy(
        model(torch.as_tensor(X, dtype=torch.float32)), torch.as_tensor(y)
    )
    return [g.detach().clone() for g in torch.autograd.grad(loss, list(model.parameters()))]


def _check_first_layer(model: nn.Module) -> None:
    """The analytic attack reads the first layer's gradients, the first two in ``parameters()``."""
    first = next((m for m in model.modules() if list(m.parameters(recurse=False))), None)
    if not isinstance(first, nn.Linear) or first.bias is None:
        raise ValueError(
            f"the analytic attack needs a first layer nn.Linear with a bias, not {first!r}"
        )


def invert_first_layer(weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The input behind a fully connected layer's weight and bias gradients (or any multiple
    of them, such as an SGD step): the weight row over its bias, for the row with the largest
    |bias| (exact for one example)."""
    weight, bias = np.asarray(weight), np.asarray(bias)
    row = int(np.argmax(np.abs(bias)))
    if bias[row] == 0:
        raise ValueError("every bias gradient is 0: this gradient carries nothing to invert")
    return weight[row] / bias[row]


def analytic_reconstruction(model: nn.Module, gradient: list[torch.Tensor]) -> np.ndarray:
    """The input, from the first layer's weight and bias gradients (exact at batch size 1)."""
    _check_first_layer(model)
    return invert_first_layer(gradient[0].numpy(), gradient[1].numpy())


def infer_labels(model: nn.Module, gradient: list[torch.Tensor], batch_size: int) -> np.ndarray:
    """The batch's labels, with repeats, from the last bias gradient. With softmax
    cross-entropy that gradient is gᶜ = (Σᵢ pᵢᶜ − nᶜ) / B for nᶜ rows of class c, so a class
    with gᶜ < 0 is certainly present (iDLG's rule; at batch size 1, the one negative entry).
    When fewer classes are negative than rows, the counts are estimated as nᶜ ≈ B (p̄ᶜ − gᶜ),
    with p̄ the model's mean prediction on random inputs (Wainakh et al., 2022), at least 1
    for each class present, rounded to sum to B. The estimate is good while the model's
    predictions are near uniform, as early in training."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    last_bias = gradient[-1].numpy().astype(np.float64)
    present = last_bias < 0
    if present.sum() >= batch_size:
        return np.sort(np.argsort(last_bias)[:batch_size])
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    probe = torch.rand((256, first.in_features), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mean_prediction = torch.softmax(model(probe), dim=1).mean(0).numpy()
    estimate = batch_size * (mean_prediction - last_bias)
    floor = present.astype(int)
    counts = np.maximum(np.floor(estimate), floor).astype(int)
    while counts.sum() < batch_size:
        counts[np.argmax(estimate - counts)] += 1
    while counts.sum() > batch_size:
        counts[np.argmax(np.where(counts > floor, counts - estimate, -np.inf))] -= 1
    return np.repeat(np.arange(len(counts)), counts)


def optimisation_attack(
    model: nn.Module,
    gradient: list[torch.Tensor],
    *,
    batch_size: int,
    shape: tuple[int, ...],
    iterations: int = 100,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """iDLG: dummy inputs of ``shape`` per row whose gradient (under the inferred labels)
    matches ``gradient`` in squared distance (relative to its squared norm, so the fit's
    tolerances do not depend on the gradient's scale), fitted with L-BFGS; returns (inputs,
    labels)."""
    labels = torch.as_tensor(infer_labels(model, gradient, batch_size))
    generator = torch.Generator().manual_seed(seed)
    dummy = torch.rand((batch_size, *shape), generator=generator, requires_grad=True)
    optimizer = torch.optim.LBFGS([dummy], max_iter=iterations, line_search_fn="strong_wolfe")
    parameters = list(model.parameters())
    scale = sum(float((t**2).sum()) for t in gradient) or 1.0

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(dummy), labels)
        guess = torch.autograd.grad(loss, parameters, create_graph=True)
        distance = sum(((g - t) ** 2).sum() for g, t in zip(guess, gradient, strict=True)) / scale
        distance.backward()
        return distance

    optimizer.step(closure)
    return dummy.detach().numpy(), labels.numpy()


def reconstruction_error(stolen: np.ndarray, originals: np.ndarray) -> float:
    """How far an attack got: for each original row, the mean absolute difference from the
    closest stolen row, averaged over the originals. Stolen rows are clipped to [0, 1] first,
    the range every pixel is known to lie in; 0 is a perfect theft."""
    stolen = np.clip(np.atleast_2d(np.asarray(stolen, dtype=np.float64)), 0.0, 1.0)
    originals = np.atleast_2d(np.asarray(originals, dtype=np.float64))
    if stolen.shape[1:] != originals.shape[1:]:
        raise ValueError(f"stolen rows of shape {stolen.shape[1:]} cannot match originals of "
                         f"shape {originals.shape[1:]}")  # fmt: skip
    distances = np.abs(stolen[None, :, :] - originals[:, None, :]).mean(axis=2)
    return float(distances.min(axis=1).mean())


def errors_by_batch_size(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    batch_sizes: Sequence[int],
    *,
    iterations: int = 100,
) -> dict[str, list[float]]:
    """Each attack's :func:`reconstruction_error` on the gradient of the first B rows of (X, y),
    for each B in ``batch_sizes``: how far batching alone protects."""
    errors: dict[str, list[float]] = {"analytic": [], "iDLG": []}
    for size in batch_sizes:
        if size > len(X):
            raise ValueError(f"batch size {size} exceeds the {len(X)} rows given")
        batch, labels = X[:size], y[:size]
        gradient = shared_gradient(model, batch, labels)
        stolen, _ = optimisation_attack(model, gradient, batch_size=size, shape=X.shape[1:],
                                        iterations=iterations)  # fmt: skip
        errors["analytic"].append(
            reconstruction_error(analytic_reconstruction(model, gradient), batch)
        )
        errors["iDLG"].append(reconstruction_error(stolen, batch))
    return errors
