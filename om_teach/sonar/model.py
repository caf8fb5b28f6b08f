"""The model Sonar trains: linear regression by full-batch gradient descent on the MSE.

A round's model travels as a :class:`ModelBundle`, canonical JSON bytes in the content store
(format ``om-teach/sonar-model/1``): the weights and bias, and what a mine needs to encrypt its
gradient so that the gradients add up: the Paillier public key's n (null in Helium, where a mine
takes every key from the capsule's pinned record, never from the bundle), the fixed-point precision,
``max_abs`` (= the clip norm C) and ``max_summands`` (= the number of mines). Each mine sends
the gradient of the mean squared error on its own rows, ``[dL/dw_1 .. dL/dw_d, dL/db]``, clipped
to L2 norm C; the scientist steps ``w -= learning_rate * sum / count``. With equal-size shards
and no clipping that is exactly full-batch gradient descent on the union of the rows
(:func:`train_centralized`), the baseline a federated run is compared with.

Threat model: a bundle is public (it is named on chain), so it holds nothing secret; a mine
trusts only what it can check: the format, every field's type and range, and that the model's
shape fits its rows. numpy only, so that a mine process stays light.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from om_teach.privacy.updates import clip

FORMAT = "om-teach/sonar-model/1"
FIELDS = (
    "format",
    "weights",
    "bias",
    "public_key_n",
    "precision",
    "max_abs",
    "max_summands",
    "clip_norm",
    "learning_rate",
    "round",
)

__all__ = [
    "FORMAT",
    "ModelBundle",
    "gradient",
    "mse",
    "predict",
    "train_centralized",
    "train_federated",
]


def canonical_json(data: object) -> bytes:
    """JSON with sorted keys and no spaces: equal content, equal CID."""
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _rows(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or len(X) == 0:
        raise ValueError(
            f"expected rows X of shape (n, d) and targets y of shape (n,) with n > 0, "
            f"got X {X.shape} and y {y.shape}"
        )
    return X, y


def _params(X: np.ndarray, weights: np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    if w.shape != (X.shape[1],):
        raise ValueError(
            f"the model has weights of shape {w.shape} but the rows have {X.shape[1]} features: "
            f"expected weights of shape ({X.shape[1]},)"
        )
    return w


def predict(X: np.ndarray, weights: np.ndarray, bias: float) -> np.ndarray:
    """The linear model's predictions ``X @ weights + bias``."""
    X = np.asarray(X, dtype=float)
    return X @ _params(X, weights) + float(bias)


def mse(X: np.ndarray, y: np.ndarray, weights: np.ndarray, bias: float) -> float:
    """Mean squared error of the model on the rows ``(X, y)``."""
    X, y = _rows(X, y)
    return float(np.mean((predict(X, weights, bias) - y) ** 2))


def gradient(X: np.ndarray, y: np.ndarray, weights: np.ndarray, bias: float) -> np.ndarray:
    """The gradient of :func:`mse` on ``(X, y)``: ``[dL/dw_1 .. dL/dw_d, dL/db]`` (length d+1)."""
    X, y = _rows(X, y)
    residual = predict(X, weights, bias) - y
    return np.append(2.0 * X.T @ residual / len(y), 2.0 * residual.mean())


def train_centralized(
    X: np.ndarray,
    y: np.ndarray,
    *,
    steps: int,
    learning_rate: float,
    weights: np.ndarray | None = None,
    bias: float = 0.0,
) -> tuple[np.ndarray, float]:
    """Full-batch gradient descent on all the rows in one place: the plaintext baseline."""
    X, y = _rows(X, y)
    w = np.zeros(X.shape[1]) if weights is None else _params(X, weights).copy()
    b = float(bias)
    for _ in range(steps):
        g = gradient(X, y, w, b)
        w, b = w - learning_rate * g[:-1], b - learning_rate * float(g[-1])
    return w, b


def train_federated(
    shards: list[tuple[np.ndarray, np.ndarray]],
    *,
    steps: int,
    learning_rate: float,
    clip_norm: float,
    weights: np.ndarray | None = None,
    bias: float = 0.0,
) -> tuple[np.ndarray, float]:
    """Sonar's rounds with plaintext aggregation: each shard's gradient clipped to
    ``clip_norm``, summed, and the mean of the sum stepped; what the encrypted rounds must equal."""
    if not shards:
        raise ValueError("federated training needs at least one shard")
    n_features = _rows(*shards[0])[0].shape[1]
    w = np.zeros(n_features) if weights is None else np.asarray(weights, dtype=float).copy()
    b = float(bias)
    for _ in range(steps):
        total = sum(clip(gradient(X, y, w, b), clip_norm=clip_norm) for X, y in shards)
        g = total / len(shards)
        w, b = w - learning_rate * g[:-1], b - learning_rate * float(g[-1])
    return w, b


def _number(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"bundle field {name!r} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or (positive and value <= 0):
        kind = "positive and finite" if positive else "finite"
        raise ValueError(f"bundle field {name!r} must be {kind}, got {value!r}")
    return float(value)


def _count(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"bundle field {name!r} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"bundle field {name!r} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class ModelBundle:
    """One round's model and the encryption parameters its gradients must use."""

    weights: tuple[float, ...]
    bias: float
    public_key_n: int | None
    precision: float
    max_abs: float
    max_summands: int
    clip_norm: float
    learning_rate: float
    round: int

    def __post_init__(self) -> None:
        if isinstance(self.weights, str | bytes) or not hasattr(self.weights, "__len__"):
            raise TypeError(f"bundle field 'weights' must be a list of numbers: {self.weights!r}")
        if len(self.weights) == 0:
            raise ValueError("bundle field 'weights' is empty: a model needs at least one weight")
        weights = tuple(_number(f"weights[{i}]", w) for i, w in enumerate(self.weights))
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "bias", _number("bias", self.bias))
        n = self.public_key_n
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 3 or n % 2 == 0):
            raise ValueError(f"bundle field 'public_key_n' must be an odd modulus, got {n!r}")
        for name in ("precision", "max_abs", "clip_norm", "learning_rate"):
            object.__setattr__(self, name, _number(name, getattr(self, name), positive=True))
        _count("max_summands", self.max_summands, minimum=1)
        _count("round", self.round, minimum=0)
        if self.max_abs < self.clip_norm:
            raise ValueError(
                f"max_abs {self.max_abs} is below clip_norm {self.clip_norm}: a clipped "
                "gradient's coordinates could not be encrypted"
            )

    @property
    def n_features(self) -> int:
        return len(self.weights)

    @property
    def params(self) -> np.ndarray:
        """``[w_1 .. w_d, b]``, the vector a gradient has the shape of."""
        return np.append(np.array(self.weights), self.bias)

    def check_features(self, n_features: int) -> None:
        """ValueError naming both shapes when the model does not fit rows of ``n_features``."""
        if self.n_features != n_features:
            raise ValueError(
                f"model of the wrong shape: it has {self.n_features} weights (gradient length "
                f"{self.n_features + 1}) but the rows have {n_features} features (gradient "
                f"length {n_features + 1})"
            )

    def stepped(self, gradient_mean: np.ndarray) -> ModelBundle:
        """The next round's bundle: ``params - learning_rate * gradient_mean``."""
        g = np.asarray(gradient_mean, dtype=float)
        if g.shape != (self.n_features + 1,):
            raise ValueError(
                f"a gradient of shape {g.shape} does not fit a model of {self.n_features} "
                f"weights: expected shape ({self.n_features + 1},)"
            )
        p = self.params - self.learning_rate * g
        return replace(
            self, weights=tuple(p[:-1].tolist()), bias=float(p[-1]), round=self.round + 1
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "weights": list(self.weights),
            "bias": self.bias,
            "public_key_n": None if self.public_key_n is None else str(self.public_key_n),
            "precision": self.precision,
            "max_abs": self.max_abs,
            "max_summands": self.max_summands,
            "clip_norm": self.clip_norm,
            "learning_rate": self.learning_rate,
            "round": self.round,
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, no spaces, so equal bundles have equal CIDs."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelBundle:
        """Parse and validate :meth:`to_bytes`'s form; ValueError/TypeError naming the field."""
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"a model bundle must be JSON: {error}") from None
        if not isinstance(raw, dict):
            raise TypeError(f"a model bundle is a JSON object, not {type(raw).__name__}")
        missing = [name for name in FIELDS if name not in raw]
        extra = sorted(set(raw) - set(FIELDS))
        if missing or extra:
            raise ValueError(f"model bundle fields: missing {missing}, unexpected {extra}")
        if raw["format"] != FORMAT:
            raise ValueError(f"unknown model format {raw['format']!r}, expected {FORMAT!r}")
        n = raw["public_key_n"]
        if n is not None and not (isinstance(n, str) and n.isascii() and n.isdigit()):
            raise ValueError(
                f"bundle field 'public_key_n' must be a decimal string or null: {n!r:.40}"
            )
        if not isinstance(raw["weights"], list):
            raise TypeError(
                f"bundle field 'weights' must be a list, not {type(raw['weights']).__name__}"
            )
        fields = {name: raw[name] for name in FIELDS if name != "format"}
        return cls(**{**fields, "public_key_n": None if n is None else int(n)})
