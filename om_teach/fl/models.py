"""The network every federated example of module 02 trains, and how it is scored."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from om_teach.data.digits import CLASSES, SIDE


def mlp(seed: int = 0, *, hidden: int = 32) -> nn.Module:
    """A 64-``hidden``-10 network with a ReLU, its weights drawn from ``seed``. Its first layer
    is fully connected, which is what the gradient-leakage attacks read."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(SIDE * SIDE, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES))


def accuracy(model: nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    """The fraction of rows of X whose most likely class under ``model`` is their label."""
    with torch.no_grad():
        predicted = model(torch.as_tensor(X, dtype=torch.float32)).argmax(1).numpy()
    return float(np.mean(predicted == np.asarray(y)))
