"""A public commitment to the round's global model, which every client checks before training.

Secure aggregation hides one client's update among the others' only if every client trains the
same model. A server that sends the others a model whose first layer cannot learn (Pasquini et
al., "Eluding Secure Aggregation in Federated Learning via Model Inconsistency", CCS 2022) gets
the target's update alone out of the sum. The defence: the server publishes the model's content
address (a Kubo-identical CID of its canonical bytes) where every client reads the same value,
such as a chain or a signed bulletin board, and each client refuses a model whose CID differs.
Trusted: that the board shows every client the same commitment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from om_teach.storage.cid import cid_of


class ModelMismatch(ValueError):
    """The model a client received is not the one the server committed to."""


def model_bytes(params: Sequence[np.ndarray]) -> bytes:
    """The parameters' canonical bytes: each layer's shape, then its float64 values."""
    parts = []
    for layer in params:
        array = np.ascontiguousarray(layer, dtype="<f8")
        parts.append(np.asarray(array.shape, dtype="<i8").tobytes() + array.tobytes())
    return b"".join(len(part).to_bytes(8, "little") + part for part in parts)


def commit(params: Sequence[np.ndarray]) -> str:
    """The model's content address, to publish before the round."""
    return cid_of(model_bytes(params))


def check_model(params: Sequence[np.ndarray], commitment: str, *, who: str = "this client") -> None:
    """ModelMismatch unless ``params`` is the model committed to as ``commitment``."""
    received = commit(params)
    if received != commitment:
        raise ModelMismatch(
            f"{who} received model {received}, not the committed {commitment}: refusing to train"
        )
