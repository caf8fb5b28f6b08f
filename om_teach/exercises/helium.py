"""Judges for the Helium module's exercises: the capsule's release rule, its noise and its budget.

Nothing here imports torch at import time: the budget judge loads the accountant (opacus) only
when it is called.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from om_teach.exercises import exercise


@exercise("helium.should_release")
def judge_should_release(should_release: Callable) -> str | None:
    """``should_release(submitters, k)``: whether the capsule may decrypt a round's sum."""
    cases = [
        (["0xa", "0xb", "0xc"], 3, True),
        (["0xa", "0xb", "0xc", "0xd"], 3, True),
        (["0xa", "0xb"], 3, False),
        ([], 1, False),
        (["0xa"], 1, True),
        (["0xa", "0xb", "0xa"], 3, False),
        (["0xa", "0xa", "0xb", "0xc"], 3, False),
        (["0xa", "0xb", "0xc", "0xd", "0xe"], 5, True),
    ]
    for submitters, k, expected in cases:
        got = should_release(list(submitters), k)
        if not isinstance(got, bool):
            return "return True or False."
        if got == expected:
            continue
        if len(set(submitters)) < len(submitters):
            return (
                "count distinct addresses: a round in which one address appears twice could "
                "hide a copied ciphertext, and the capsule refuses it outright."
            )
        if len(submitters) == k:
            return "exactly k distinct contributors is enough: the threshold is 'at least k'."
        return "release only when at least k distinct mines contributed to the round."
    return None


@exercise("helium.noise_std")
def judge_noise_std(noise_std: Callable) -> str | None:
    """``noise_std(clip_norm, noise_multiplier, count)``: the noise std on the averaged update."""
    for clip_norm, multiplier, count in ((1.0, 1.0, 10), (2.0, 0.5, 9), (0.3, 3.0, 7), (5, 0, 3)):
        got = noise_std(clip_norm, multiplier, count)
        if isinstance(got, bool) or not isinstance(got, int | float):
            return "return the standard deviation as a float."
        expected = multiplier * clip_norm / count
        if math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12):
            continue
        if math.isclose(got, multiplier * clip_norm, rel_tol=1e-9):
            return (
                "that is the noise on the sum; the scientist divides the sum by the number of "
                "contributors, and dividing a Gaussian by a constant divides its std too."
            )
        if math.isclose(got, expected * math.sqrt(count), rel_tol=1e-9):
            return (
                "the noise is drawn once, on the sum, not once per mine: nothing averages it "
                "down by a square root."
            )
        return (
            "the capsule adds N(0, (z·C)²) to each coordinate of the sum, and the scientist "
            "steps by the sum divided by the number of contributors."
        )
    return None


@exercise("helium.rounds_affordable")
def judge_rounds_affordable(rounds_affordable: Callable) -> str | None:
    """``rounds_affordable(noise_multiplier, budget, delta)``: how many capsule releases fit."""
    from om_teach.privacy.accounting import epsilon

    for multiplier, budget in ((1.0, 10.0), (2.0, 5.0), (4.0, 3.0), (1.0, 4.0)):
        rounds = 0
        while (
            epsilon(noise_multiplier=multiplier, sample_rate=1.0, steps=rounds + 1, delta=1e-5)
            <= budget
        ):
            rounds += 1
        got = rounds_affordable(multiplier, budget, 1e-5)
        if isinstance(got, bool) or not isinstance(got, int):
            return "return the number of rounds as an int."
        if got == rounds:
            continue
        if got == rounds + 1:
            return "the last round you count must still fit: ε after it may not exceed the budget."
        if got > rounds + 1:
            return (
                "every round takes all the mines that submit: account each release at "
                "sample_rate=1.0, with no amplification by sampling."
            )
        return (
            "ε composes sublinearly under RDP accounting: ask om_teach.privacy.accounting."
            "epsilon for the ε of r rounds rather than multiplying one round's ε by r."
        )
    return None
