"""The architectures a node hosts: a name, a builder, and the input each model takes.

Weights arrive as safetensors, which hold only tensors; the code that runs them comes from this
registry, never from the upload. :func:`check_weights` says exactly how an upload fails to fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Architecture:
    """A hostable network: ``build()`` makes it with fresh weights; it maps rows of
    ``input_features`` floats to rows of ``output_features``."""

    name: str
    description: str
    build: Callable[[], nn.Module]
    input_features: int
    output_features: int


def _digits_mlp(hidden: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


REGISTRY: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "digits-mlp",
            "8×8 digits (64 pixels in [0, 1]) to 10 class scores; the network of module 02",
            _digits_mlp,
            64,
            10,
        ),
        Architecture(
            "digits-mlp-wide",
            "8×8 digits to 10 class scores through 128 hidden units (9,610 parameters)",
            lambda: _digits_mlp(128),
            64,
            10,
        ),
        Architecture(
            "diabetes-linear",
            "10 standardized diabetes features to one prediction; Sonar's model",
            lambda: nn.Linear(10, 1),
            10,
            1,
        ),
    )
}


class ArchitectureError(ValueError):
    """An unknown architecture, or weights that do not fit one."""


def get(name: str) -> Architecture:
    """The architecture ``name``; ArchitectureError naming the known ones otherwise."""
    if name not in REGISTRY:
        raise ArchitectureError(
            f"unknown architecture {name!r}; this node hosts: {', '.join(sorted(REGISTRY))}"
        )
    return REGISTRY[name]


def check_weights(architecture: Architecture, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The architecture's network holding ``tensors``, if they are exactly its parameters (names,
    shapes, float32, finite); ArchitectureError naming the first mismatch otherwise."""
    model = architecture.build()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ArchitectureError(
            f"{architecture.name} has tensors {sorted(expected)}; the upload lacks {missing} "
            f"and has unexpected {extra}"
        )
    for name, want in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(want.shape):
            raise ArchitectureError(
                f"tensor {name!r} has shape {tuple(got.shape)}; {architecture.name} needs "
                f"{tuple(want.shape)}"
            )
        if got.dtype != want.dtype:
            raise ArchitectureError(f"tensor {name!r} is {got.dtype}; it must be {want.dtype}")
        if not torch.isfinite(got).all():
            raise ArchitectureError(f"tensor {name!r} holds NaN or infinite values")
    model.load_state_dict(tensors)
    return model.eval()
