"""Secure aggregation eluded by model inconsistency (Pasquini et al., CCS 2022).

The server sends the target client the real model and every other client a copy whose first
layer is dead (zero weights, bias −1: behind a ReLU no unit ever fires, so that layer's change
is 0). The securely aggregated sum of the first layer's changes is then the target's alone,
and :func:`~om_teach.attacks.gradient_leakage.invert_first_layer` reads the target's input
from it (a one-step change is −η times the gradient, and the ratio is the same).
:mod:`om_teach.fl.commitment` stops it: clients who check the model they got against the
public commitment refuse the dead copy.
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
