"""Hidden checks of the tiny test exam."""


def cases_q1_mean(rng):
    return [[rng.normal(size=int(n)).round(3).tolist()] for n in rng.integers(1, 20, 4)]


def reference_q1_mean(values):
    return sum(values) / len(values)


TOLERANCE = {"q1_mean": 1e-9}
