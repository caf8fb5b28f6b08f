"""Judges for the Hydrogen module's exercises: the contract's payout, a mine's gradient and the
scientist's update step, each tested on inputs of the judge's own making."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from om_teach.exercises import exercise


def _owed(bounty: int, initial: int, target: int, best_before: int, new: int) -> int:
    """The contract's ``_owed`` (model_repository.vy), in integer wei."""
    before, after = max(best_before, target), max(new, target)
    return 0 if after >= before else bounty * (before - after) // (initial - target)


@exercise("hydrogen.payout")
def judge_payout(payout: Callable) -> str | None:
    """``payout(bounty, initial_error, target_error, best_before, new_error)``: what a round is
    owed in wei, errors as the contract stores them (integers scaled by 10**6)."""
    rng = random.Random(2017)
    cases = [
        (10**18, 700_000, 0, 700_000, 636_243),  # the first round of the demo
        (10**18, 700_000, 500_000, 520_000, 450_000),  # crosses the target
        (10**18, 700_000, 500_000, 480_000, 450_000),  # already below the target
        (10**18, 700_000, 0, 600_000, 650_000),  # worse than the best so far
        (10**18, 700_000, 0, 600_000, 600_000),  # no change
    ]
    for _ in range(20):
        target = rng.randrange(0, 400_000)
        initial = rng.randrange(target + 1, 2_000_000)
        best = rng.randrange(0, initial + 1)
        cases.append((rng.randrange(1, 10**21), initial, target, best, rng.randrange(0, initial)))
    for bounty, initial, target, best, new in cases:
        got = payout(bounty, initial, target, best, new)
        if isinstance(got, bool) or not isinstance(got, int):
            return "return the payout as a Python int of wei: the EVM has no floats."
        want = _owed(bounty, initial, target, best, new)
        if got < 0:
            return "a payout is never negative: a round that makes the model worse is owed 0."
        if got == want:
            continue
        if max(best, target) <= max(new, target):
            return "a round that does not improve on the best error (above the target) earns 0."
        if new < target or best < target:
            return (
                "improvement below the target error is not paid for: floor both the best "
                "error before the round and the new error at the target."
            )
        if abs(got - want) <= want // 10**9 + 2:
            return (
                "off by a few wei: multiply the bounty by the improvement first and divide "
                "last, with integer floor division, as the contract does."
            )
        return (
            "the bounty pays for the whole way from the initial error down to the target: a "
            "round gets the share of the bounty that its improvement is of that span."
        )
    return None


@exercise("hydrogen.mine_gradient")
def judge_mine_gradient(mine_gradient: Callable) -> str | None:
    """``mine_gradient(X, y, weights, bias)``: the gradient of the mean squared error on a
    mine's rows, ``[dL/dw_1 .. dL/dw_d, dL/db]``."""
    rng = np.random.default_rng(2017)
    for n, d in ((5, 1), (30, 4), (200, 10)):
        X, y = rng.normal(size=(n, d)), rng.normal(size=n)
        w, b = rng.normal(size=d), float(rng.normal())
        got = np.asarray(mine_gradient(X.copy(), y.copy(), w.copy(), b), dtype=float)
        if got.shape != (d + 1,):
            return (
                f"return one vector of length d + 1 = {d + 1}: a derivative per weight, and "
                "the derivative by the bias last."
            )
        residual = X @ w + b - y
        want = np.append(2.0 * X.T @ residual / n, 2.0 * residual.mean())
        if np.allclose(got, want):
            continue
        if np.allclose(got, -want):
            return "the sign is flipped: the residual is prediction minus target."
        if np.allclose(got, want / 2):
            return "d/dr of r² is 2r: a factor is missing."
        if np.allclose(got, want * n):
            return "the loss is a mean over the rows, not a sum: divide by their number."
        if np.allclose(got[:-1], want[:-1]):
            return "the weights are right; check the bias's derivative (the last entry)."
        return "differentiate mean((X @ w + b - y)²) by each weight and by the bias."
    return None


@exercise("hydrogen.update_step")
def judge_update_step(update_step: Callable) -> str | None:
    """``update_step(params, gradient_sum, count, learning_rate)``: the scientist's next
    parameters from the decrypted sum of ``count`` mines' gradients."""
    rng = np.random.default_rng(2017)
    for count, lr in ((10, 0.1), (7, 0.05), (1, 0.5)):
        params = rng.normal(size=11)
        gradients = rng.normal(size=(count, 11))
        total = gradients.sum(axis=0)
        got = np.asarray(update_step(params.copy(), total.copy(), count, lr), dtype=float)
        if got.shape != params.shape:
            return "return the new parameters, a vector as long as params."
        want = params - lr * gradients.mean(axis=0)
        if np.allclose(got, want):
            continue
        if np.allclose(got, params - lr * total):
            return "the decrypted vector is a sum over the mines: average it first."
        if np.allclose(got, params + lr * total / count):
            return "gradient descent steps against the gradient."
        if np.allclose(got, params - total / count):
            return "scale the step by the learning rate."
        return "step the parameters by the learning rate times the mines' average gradient."
    return None
