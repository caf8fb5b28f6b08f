"""Secure aggregation eluded by model inconsistency (Pasquini et al., CCS 2022).

The server sends the target client the real model and every other client a copy whose first
layer is dead (zero weights, bias −1: behind a ReLU no unit ever fires, so that layer's change
is 0). The securely aggregated sum of the first layer's changes is then the target's alone,
and the analytic inversion (:mod:`om_teach.attacks.gradient_leakage`) reads the target's input
from it. :mod:`om_teach.fl.commitment` stops it: clients who check the model they got against
the public commitment refuse the dead copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from om_teach.fl.strategy import Params


def dead_first_layer(params: Sequence[np.ndarray]) -> Params:
    """``params`` with the first layer's weights 0 and biases −1: no ReLU behind it fires."""
    dead = [np.array(p, dtype=float, copy=True) for p in params]
    dead[0][:] = 0.0
    dead[1][:] = -1.0
    return dead


def input_from_first_layer_change(weight_change: np.ndarray, bias_change: np.ndarray) -> np.ndarray:
    """The input of a one-example, one-step update from its first layer's change: the change
    is −η times the gradient, so the ratio of a weight row to its bias is the input."""
    row = int(np.argmax(np.abs(bias_change)))
    if bias_change[row] == 0:
        raise ValueError("the first layer did not change: no input to read")
    return weight_change[row] / bias_change[row]
