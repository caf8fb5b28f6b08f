"""Reference answers to the notebooks' self-checks, and wrong answers that must fail.

They live here, not in the package, so that no student can import a solution.
"""

from __future__ import annotations


def candidates(record, register, tolerance):
    fits = True
    for column, tol in tolerance.items():
        fits = fits & ((register[column] - record[column]).abs() <= tol)
    return list(register["name"][fits])


def candidates_strict(record, register, tolerance):
    """Wrong: excludes values exactly at the tolerance."""
    fits = True
    for column, tol in tolerance.items():
        fits = fits & ((register[column] - record[column]).abs() < tol)
    return list(register["name"][fits])


def candidates_age_only(record, register, tolerance):
    """Wrong: joins on age alone."""
    return list(register["name"][register["age"] == record["age"]])


def smallest_class(table, quasi_identifiers):
    return int(table.groupby(list(quasi_identifiers)).size().min())


def smallest_class_first_column(table, quasi_identifiers):
    """Wrong: groups by the first column only."""
    return int(table.groupby(quasi_identifiers[0]).size().min())


class AlwaysEqual(int):
    """Wrong, and adversarial: claims to equal everything."""

    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


def smallest_class_liar(table, quasi_identifiers):
    return AlwaysEqual(999)


def paillier_add(c1, c2, n):
    return c1 * c2 % (n * n)


def shamir_reconstruct(points, prime):
    secret = 0
    for i, (xi, yi) in enumerate(points):
        weight = 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                weight = weight * xj * pow(xj - xi, -1, prime) % prime
        secret = (secret + yi * weight) % prime
    return secret


def beaver_share(i, d, e, a_i, b_i, c_i, modulus):
    z = c_i + d * b_i + e * a_i + (d * e if i == 0 else 0)
    return z % modulus


def masked_input(x, me, masks, modulus):
    for other, mask in masks.items():
        x = x + mask if me < other else x - mask
    return x % modulus


def clip(update, clip_norm):
    import numpy as np

    norm = np.linalg.norm(update)
    return update * min(1.0, clip_norm / norm)


REFERENCE = {
    "welcome.candidates": candidates,
    "welcome.smallest_class": smallest_class,
    "toolbox.paillier_add": paillier_add,
    "toolbox.shamir_reconstruct": shamir_reconstruct,
    "toolbox.beaver_share": beaver_share,
    "toolbox.masked_input": masked_input,
    "toolbox.clip": clip,
}

WRONG = {
    "welcome.candidates": [candidates_strict, candidates_age_only, lambda *a: "Ann"],
    "welcome.smallest_class": [smallest_class_first_column, smallest_class_liar, lambda *a: "2"],
    "toolbox.paillier_add": [
        lambda c1, c2, n: c1 + c2,  # adds ciphertexts
        lambda c1, c2, n: c1 * c2 % n,  # wrong modulus
        lambda c1, c2, n: AlwaysEqual(c1),
    ],
    "toolbox.shamir_reconstruct": [
        lambda points, prime: points[0][1],  # one share is not the secret
        lambda points, prime: sum(y for _, y in points) % prime,  # additive, not Shamir
    ],
    "toolbox.beaver_share": [
        lambda i, d, e, a, b, c, m: (c + d * b + e * a + d * e) % m,  # every party adds d·e
        lambda i, d, e, a, b, c, m: (d * e) % m,
    ],
    "toolbox.masked_input": [
        lambda x, me, masks, m: x,  # no mask
        lambda x, me, masks, m: (x + sum(masks.values())) % m,  # masks never cancel
    ],
    "toolbox.clip": [
        lambda u, c: u / max(abs(u)) * c,  # max norm, not L2
        lambda u, c: u * c / (sum(u * u) ** 0.5),  # always rescales, even short updates
        lambda u, c: __import__("numpy").clip(u, -c, c),  # clips coordinates
    ],
}
