"""Reference and wrong answers to the Hydrogen module's self-checks (notebooks/03_hydrogen)."""

from __future__ import annotations

import numpy as np


def payout(bounty, initial_error, target_error, best_before, new_error):
    floor_before = max(best_before, target_error)
    floor_after = max(new_error, target_error)
    if floor_after >= floor_before:
        return 0
    return bounty * (floor_before - floor_after) // (initial_error - target_error)


def payout_float(bounty, initial_error, target_error, best_before, new_error):
    """Wrong: float arithmetic, which the EVM does not have."""
    gain = max(best_before, target_error) - max(new_error, target_error)
    return max(gain, 0) * bounty / (initial_error - target_error)


def payout_truncated_float(bounty, initial_error, target_error, best_before, new_error):
    """Wrong: divides before multiplying, in floats, and rounds off wei."""
    gain = max(best_before, target_error) - max(new_error, target_error)
    return int(max(gain, 0) / (initial_error - target_error) * bounty)


def payout_no_floor(bounty, initial_error, target_error, best_before, new_error):
    """Wrong: pays for improvement below the target."""
    return max(bounty * (best_before - new_error) // (initial_error - target_error), 0)


def payout_sonar(bounty, initial_error, target_error, best_before, new_error):
    """Wrong: Sonar's original rule, divided by the best error."""
    return max(bounty * (best_before - new_error) // best_before, 0)


def payout_signed(bounty, initial_error, target_error, best_before, new_error):
    """Wrong: a worse round is owed a negative amount."""
    gain = max(best_before, target_error) - max(new_error, target_error)
    return bounty * gain // (initial_error - target_error)


def mine_gradient(X, y, weights, bias):
    residual = X @ weights + bias - y
    return np.append(2.0 * X.T @ residual / len(y), 2.0 * residual.mean())


def update_step(params, gradient_sum, count, learning_rate):
    return params - learning_rate * gradient_sum / count


REFERENCE = {
    "hydrogen.payout": payout,
    "hydrogen.mine_gradient": mine_gradient,
    "hydrogen.update_step": update_step,
}

WRONG = {
    "hydrogen.payout": [
        payout_float,
        payout_truncated_float,
        payout_no_floor,
        payout_sonar,
        payout_signed,
        lambda *args: 0,
    ],
    "hydrogen.mine_gradient": [
        lambda X, y, w, b: np.append(X.T @ (X @ w + b - y) / len(y), (X @ w + b - y).mean()),
        lambda X, y, w, b: np.append(2 * X.T @ (X @ w + b - y), 2 * (X @ w + b - y).sum()),
        lambda X, y, w, b: np.append(
            2 * X.T @ (y - X @ w - b) / len(y), 2 * (y - X @ w - b).mean()
        ),
        lambda X, y, w, b: 2 * X.T @ (X @ w + b - y) / len(y),
        lambda X, y, w, b: np.append(2 * X.T @ (X @ w + b - y) / len(y), 0.0),
    ],
    "hydrogen.update_step": [
        lambda p, s, c, lr: p - lr * s,
        lambda p, s, c, lr: p + lr * s / c,
        lambda p, s, c, lr: p - s / c,
    ],
}
