"""Reference and wrong answers to the Helium notebook's self-checks."""

from __future__ import annotations


def should_release(submitters, k):
    distinct = len(set(submitters))
    return distinct == len(submitters) and distinct >= k


def noise_std(clip_norm, noise_multiplier, count):
    return noise_multiplier * clip_norm / count


def rounds_affordable(noise_multiplier, budget, delta):
    from om_teach.privacy.accounting import epsilon

    rounds = 0
    while (
        epsilon(noise_multiplier=noise_multiplier, sample_rate=1.0, steps=rounds + 1, delta=delta)
        <= budget
    ):
        rounds += 1
    return rounds


def rounds_linear(noise_multiplier, budget, delta):
    """Wrong: basic composition, one round's ε times r."""
    from om_teach.privacy.accounting import epsilon

    one = epsilon(noise_multiplier=noise_multiplier, sample_rate=1.0, steps=1, delta=delta)
    return int(budget // one)


def rounds_one_too_many(noise_multiplier, budget, delta):
    """Wrong: counts the first round that goes over the budget."""
    return rounds_affordable(noise_multiplier, budget, delta) + 1


def rounds_sampled(noise_multiplier, budget, delta):
    """Wrong: claims amplification by sampling at rate 0.1."""
    from om_teach.privacy.accounting import epsilon

    rounds = 0
    while (
        epsilon(noise_multiplier=noise_multiplier, sample_rate=0.1, steps=rounds + 1, delta=delta)
        <= budget
    ):
        rounds += 1
    return rounds


REFERENCE = {
    "helium.should_release": should_release,
    "helium.noise_std": noise_std,
    "helium.rounds_affordable": rounds_affordable,
}

WRONG = {
    "helium.should_release": [
        lambda submitters, k: len(submitters) >= k,  # counts a repeated address twice
        lambda submitters, k: len(set(submitters)) > k,  # exactly k is enough
        lambda submitters, k: len(set(submitters)) >= k,  # lets a repeated address through
        lambda submitters, k: 1,
    ],
    "helium.noise_std": [
        lambda c, z, n: z * c,  # the sum's noise, not the average's
        lambda c, z, n: z * c / n**0.5,  # noise drawn per mine
        lambda c, z, n: c / n,  # forgets the multiplier
    ],
    "helium.rounds_affordable": [
        rounds_linear,
        rounds_one_too_many,
        rounds_sampled,
        lambda *a: 3.0,
    ],
}
