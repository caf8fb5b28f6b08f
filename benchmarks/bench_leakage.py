"""Gradient leakage on digits: the reconstruction error of each attack against batch size, and
of the analytic attack across the defences of module 02, each against its own attacker.

Part 1 attacks the gradient of the first B training images (analytic inversion of the first
layer, and iDLG with labels counted from the gradient). Part 2 runs one round of federated SGD
with 10 clients, the target holding one image and each other client eight, and attacks the
target through each defence (``om_teach.attacks.exposure``). The error is the mean absolute
pixel difference (pixels in [0, 1]) from the closest stolen image; guessing the average digit
scores about 0.2. Each figure is the median over seeds, each seed a different model and
target; ε is at δ = 1e-5.

Run ``python benchmarks/bench_leakage.py [--quick]``. It prints a markdown section to stdout.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics

import numpy as np
import torch

from om_teach.attacks import exposure
from om_teach.attacks.gradient_leakage import errors_by_batch_size, reconstruction_error
from om_teach.data.digits import load_digits
from om_teach.fl.models import mlp

FULL = {"seeds": tuple(range(5)), "batch_sizes": (1, 2, 4, 8, 16, 32), "iterations": 200}
QUICK = {"seeds": (0,), "batch_sizes": (1, 4), "iterations": 50}
CLIENTS, OTHERS_IMAGES, THRESHOLD, LR, CLIP, Z = 10, 8, 6, 0.1, 0.1, 1.0


def defences(seed: int) -> tuple[list[exposure.Exposure], float]:
    """Every defence's exposures for one seed's model and target, and the guess's error."""
    digits = load_digits(seed)
    X, y = digits.X_train, digits.y_train
    cuts = [0, 1, *range(1 + OTHERS_IMAGES, 1 + OTHERS_IMAGES * CLIENTS, OTHERS_IMAGES)]
    shards = [(X[a:b], y[a:b]) for a, b in itertools.pairwise(cuts)]
    model = mlp(seed)
    rng = np.random.default_rng(seed)
    noise = {"clip_norm": CLIP, "noise_multiplier": Z, "learning_rate": LR, "rng": rng}
    inconsistent = {"threshold": THRESHOLD, "learning_rate": LR}
    results = [
        exposure.no_defence(model, shards, learning_rate=LR),
        exposure.secure_aggregation(model, shards, threshold=THRESHOLD, learning_rate=LR),
        exposure.model_inconsistency(model, shards, commitment=False, **inconsistent),
        exposure.model_inconsistency(model, shards, commitment=True, **inconsistent),
        *exposure.differential_privacy(model, shards[:1], noise_at="server", **noise),
        *exposure.differential_privacy(model, shards, noise_at="client", **noise),
    ]
    return results, reconstruction_error(X.mean(axis=0), X[:1])


def _cell(values: list[float]) -> str:
    finite = [v for v in values if not math.isnan(v)]
    return f"{statistics.median(finite):.3f}" if finite else "refused"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds and batch sizes")
    config = QUICK if parser.parse_args(argv).quick else FULL
    torch.set_num_threads(1)
    curves = []
    for seed in config["seeds"]:
        digits = load_digits(seed)
        sizes, iterations = config["batch_sizes"], config["iterations"]
        curves.append(errors_by_batch_size(mlp(seed), digits.X_train, digits.y_train, sizes,
                                           iterations=iterations))  # fmt: skip
    lines = [
        "## Gradient leakage",
        "",
        f"**Error against batch size**, median over seeds {list(config['seeds'])} (MLP 64-32-10, "
        f"iDLG with {config['iterations']} L-BFGS iterations).",
        "",
        "| batch size | analytic | iDLG |",
        "|---:|---:|---:|",
    ]
    for i, size in enumerate(config["batch_sizes"]):
        cells = " | ".join(_cell([c[attack][i] for c in curves]) for attack in ("analytic", "iDLG"))
        lines.append(f"| {size} | {cells} |")
    runs = [defences(seed) for seed in config["seeds"]]
    lines += [
        "",
        f"**Across defences**: one round of {CLIENTS} clients (target: 1 image, others: "
        f"{OTHERS_IMAGES}), t = {THRESHOLD}, C = {CLIP}, z = {Z}; central DP's round holds the "
        "target alone, the reader's worst case.",
        "",
        "| defence | attacker | error | ε against the attacker |",
        "|---|---|---:|---:|",
    ]
    for row, first in enumerate(runs[0][0]):
        errors = [results[row].error for results, _ in runs]
        eps = "∞" if first.epsilon == math.inf else f"{first.epsilon:.2f}"
        lines.append(f"| {first.defence} | {first.attacker} | {_cell(errors)} | {eps} |")
    lines.append(f"| guess the average digit | anyone | {_cell([g for _, g in runs])} | — |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
