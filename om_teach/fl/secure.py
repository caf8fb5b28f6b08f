"""FedAvg through secure aggregation (:mod:`om_teach.crypto.secagg`): the server learns the sum of
the round's weighted changes and nothing about any one client's.

Each client i sends, masked, its change Δᵢ = xᵢ − x weighted by wᵢ = nᵢ / ``max_examples`` (a
public bound on any client's example count), quantized as Flower's SecAgg+ does (clipped to
±``clipping_range``, scaled to [0, ``target_range``], rounded stochastically), and its example
count nᵢ as one more exact integer. The server unmasks only Σ wᵢΔᵢ and Σ nᵢ, and steps the model
by ``max_examples`` · Σ wᵢΔᵢ / Σ nᵢ: FedAvg, to within the quantization step.

Trust as in :mod:`om_teach.crypto.secagg`: honest-but-curious server and clients, up to t − 1
colluding clients. A server that sends clients different models is outside it (see module 02).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from om_teach.crypto.secagg import dequantize, quantize, run_secagg
from om_teach.fl.strategy import FedAvg, Params, Update, check_params, flatten, unflatten


def encode_change(
    change: np.ndarray,
    examples: int,
    *,
    max_examples: int,
    clipping_range: float = 1.0,
    target_range: int = 1 << 16,
    rng: np.random.Generator | None = None,
    who: str = "a client",
) -> np.ndarray:
    """One client's input to secure aggregation: its flat change weighted by
    ``examples / max_examples`` and quantized, then its example count as one exact integer."""
    n = examples
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= max_examples:
        raise ValueError(f"{who} reports {n!r} examples; each must lie in [1, {max_examples}]")
    weighted = quantize(
        np.asarray(change, dtype=float) * (n / max_examples),
        clipping_range=clipping_range,
        target_range=target_range,
        rng=rng,
    )
    return np.append(weighted, np.uint64(n))


def decode_sum(
    total: np.ndarray,
    count: int,
    *,
    max_examples: int,
    clipping_range: float = 1.0,
    target_range: int = 1 << 16,
    bits: int = 32,
) -> np.ndarray:
    """FedAvg's step, max_examples · Σ wᵢΔᵢ / Σ nᵢ, from the unmasked sum of ``count``
    clients' :func:`encode_change` vectors."""
    weighted_sum = dequantize(
        np.asarray(total)[:-1],
        clipping_range=clipping_range,
        target_range=target_range,
        count=count,
        bits=bits,
    )
    examples = int(np.asarray(total)[-1])
    if examples < 1:
        raise ValueError(f"the unmasked example count is {examples}: the sum is damaged")
    return weighted_sum * max_examples / examples


class SecAggFedAvg(FedAvg):
    """FedAvg whose server sees only the round's sum; ``threshold`` is secagg's t."""

    def __init__(
        self,
        *,
        threshold: int,
        max_examples: int,
        clipping_range: float = 1.0,
        target_range: int = 1 << 16,
        bits: int = 32,
        fraction: float = 1.0,
        min_clients: int = 1,
    ) -> None:
        super().__init__(fraction=fraction, min_clients=max(min_clients, threshold))
        if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
            raise ValueError(f"max_examples must be a positive int, got {max_examples!r}")
        if not clipping_range > 0:
            raise ValueError(f"clipping_range must be positive, got {clipping_range!r}")
        self.threshold, self.max_examples, self.bits = threshold, max_examples, bits
        self.clipping_range, self.target_range = clipping_range, target_range

    def step(self) -> float:
        """The quantization step of one client's weighted change."""
        return 2 * self.clipping_range / self.target_range

    def aggregate(self, round: int, current: Params, updates: Sequence[Update]) -> Params:
        """The next model, from the unmasked sum alone."""
        if not updates:
            raise ValueError("no client updates to aggregate")
        if len(updates) < self.threshold:
            raise ValueError(
                f"secure aggregation needs at least t={self.threshold} clients, got {len(updates)}"
            )
        start = flatten(current)
        quantization = {"clipping_range": self.clipping_range, "target_range": self.target_range}
        inputs = []
        for i, update in enumerate(updates):
            params = check_params(update.params, current, f"client {i}")
            inputs.append(
                encode_change(
                    flatten(params) - start,
                    update.num_examples,
                    max_examples=self.max_examples,
                    who=f"client {i}",
                    **quantization,
                )
            )
        total = run_secagg(inputs, self.threshold, bits=self.bits, round_id=round).total
        step = decode_sum(
            total, len(updates), max_examples=self.max_examples, bits=self.bits, **quantization
        )
        return unflatten(start + step, current)
