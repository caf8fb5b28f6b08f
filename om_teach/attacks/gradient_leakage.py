"""Gradient leakage: what a shared gradient gives away about the examples it was computed on.

Two attacks on a model whose first layer is fully connected, y = W x + b:

* :func:`analytic_reconstruction`, exact at batch size 1. The gradient of the loss on row i of
  W is ∂L/∂bᵢ · xᵀ, so any row with ∂L/∂bᵢ ≠ 0 divided by ∂L/∂bᵢ is the input itself (Phong et
  al., 2017; Geiping et al., "Inverting Gradients", NeurIPS 2020). With a batch, the same ratio
  gives a mix of the batch's inputs.
* :func:`optimisation_attack`, iDLG (Zhao et al., 2020, after DLG: Zhu et al., NeurIPS 2019):
  infer each label from the signs of the last layer's bias gradient, then fit dummy inputs whose
  gradient matches the shared one, with L-BFGS. It works for small batches.

Both take only what a server receives in plain federated SGD: the model and one gradient.
"""

from __future__ import annotations

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
    """iDLG's labels: with softmax cross-entropy the last bias gradient is (p − onehot(y)) / B,
    negative only at the batch's labels; the ``batch_size`` most negative entries name them."""
    last_bias = gradient[-1]
    return torch.argsort(last_bias)[:batch_size].numpy()


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
    matches ``gradient`` in squared distance, fitted with L-BFGS; returns (inputs, labels)."""
    labels = torch.as_tensor(infer_labels(model, gradient, batch_size))
    generator = torch.Generator().manual_seed(seed)
    dummy = torch.rand((batch_size, *shape), generator=generator, requires_grad=True)
    optimizer = torch.optim.LBFGS([dummy], max_iter=iterations, line_search_fn="strong_wolfe")
    parameters = list(model.parameters())

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(dummy), labels)
        guess = torch.autograd.grad(loss, parameters, create_graph=True)
        distance = sum(((g - t) ** 2).sum() for g, t in zip(guess, gradient, strict=True))
        distance.backward()
        return distance

    optimizer.step(closure)
    return dummy.detach().numpy(), labels.numpy()
