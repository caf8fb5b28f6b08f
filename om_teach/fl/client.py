"""A federated client's side: read and write a torch model's parameters, and train it locally.

:func:`local_train` runs plain minibatch SGD on the client's own rows for a number of epochs
or of steps, and returns the trained parameters with the number of rows, as a
:class:`~om_teach.fl.strategy.Update` for the server's strategy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from om_teach.fl.strategy import Params, Update, check_params


def get_params(model: nn.Module) -> Params:
    """The model's parameters and buffers as numpy arrays, in ``state_dict`` order."""
    return [value.detach().cpu().numpy().copy() for value in model.state_dict().values()]


def set_params(model: nn.Module, params: Sequence[np.ndarray]) -> None:
    """Load ``params`` (as :func:`get_params` returns them) into ``model``; ValueError on a
    mismatch in layers, shapes or finiteness."""
    state = model.state_dict()
    checked = check_params(params, [v.cpu().numpy() for v in state.values()], "the parameters")
    model.load_state_dict(
        {
            name: torch.as_tensor(array, dtype=old.dtype)
            for (name, old), array in zip(state.items(), checked, strict=True)
        }
    )


def local_train(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    *,
    learning_rate: float,
    batch_size: int,
    epochs: int | None = None,
    steps: int | None = None,
    rng: np.random.Generator,
    loss: nn.Module | None = None,
) -> Update:
    """Train ``model`` in place with SGD on (X, y) for ``epochs`` passes over shuffled rows or
    for ``steps`` minibatches (one of the two), and return its parameters as an Update.

    ``loss`` defaults to cross-entropy (y holds class indices)."""
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs and steps")
    count = epochs if epochs is not None else steps
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"epochs or steps must be a positive int, got {count!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not (isinstance(learning_rate, int | float) and 0 < learning_rate < float("inf")):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    if len(X) == 0 or len(X) != len(y):
        raise ValueError(f"a client needs rows and one label each, got {len(X)} and {len(y)}")
    features = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(y))
    loss = nn.CrossEntropyLoss() if loss is None else loss
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    model.train()
    for batch in _batches(len(X), batch_size, rng, epochs=epochs, steps=steps):
        optimizer.zero_grad()
        loss(model(features[batch]), labels[batch]).backward()
        optimizer.step()
    return Update(get_params(model), len(X))


def _batches(
    n: int, batch_size: int, rng: np.random.Generator, *, epochs: int | None, steps: int | None
):
    """Row indices of each minibatch: whole shuffled epochs, or ``steps`` batches cycling
    through shuffled epochs."""
    done = 0
    while True:
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            yield torch.as_tensor(order[start : start + batch_size])
            done += 1
            if steps is not None and done == steps:
                return
        if epochs is not None and done == epochs * -(-n // batch_size):
            return
