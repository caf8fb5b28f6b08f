"""Federated learning on digits: simulation speed, and FedAvg against centralized and local-only
training on iid and on Dirichlet label-skewed splits.

Part 1 times rounds of 1,000 in-process clients (``om_teach.fl.simulation.simulate``), each
taking one local step or one epoch. Part 2 trains the same MLP (64-32-10) three ways on the
same 80% of scikit-learn's digits, and scores it on the other 20%: centralized SGD over all the
training rows, FedAvg over 20 clients (all sampled each round), and local-only training, each
client on its own rows (their mean test accuracy). Each figure is the median over 3 seeds.

Run ``python benchmarks/bench_fl.py [--quick]``. It prints a markdown section to stdout.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

from om_teach.data.digits import load_digits
from om_teach.data.partition import dirichlet, iid
from om_teach.fl.baselines import compare
from om_teach.fl.models import accuracy, mlp
from om_teach.fl.simulation import simulate
from om_teach.fl.strategy import FedAvg

FULL = {"sim_rounds": 5, "rounds": 30, "seeds": (0, 1, 2)}
QUICK = {"sim_rounds": 2, "rounds": 5, "seeds": (0,)}
CLIENTS, LR, BATCH = 20, 0.1, 16
SPLITS = (None, 0.3, 0.05)  # iid, then Dirichlet α: the smaller, the more skewed


def simulation_speed(rounds: int) -> dict[str, list[float]]:
    """Seconds per round of 1,000 clients on all of digits, one local step or one epoch each."""
    digits = load_digits(0)
    X, y = digits.X_train, digits.y_train
    shards = [(X[rows], y[rows]) for rows in iid(len(X), 1000, seed=0)]
    seconds = {}
    for name, local in (("1 local step", {"steps": 1}), ("1 local epoch", {"epochs": 1})):
        results = simulate(mlp(0), shards, FedAvg(), rounds=rounds, learning_rate=LR,
                           batch_size=8, seed=0, **local)  # fmt: skip
        seconds[name] = [r.seconds for r in results]
    return seconds


def final_accuracy(rounds: int, seed: int, alpha: float | None) -> dict[str, float]:
    """Test accuracy after ``rounds`` of centralized, FedAvg and local-only training."""
    digits = load_digits(seed)
    X, y = digits.X_train, digits.y_train
    rows = iid(len(X), CLIENTS, seed=seed) if alpha is None else dirichlet(y, CLIENTS, alpha, seed)
    curves = compare(mlp(seed), [(X[r], y[r]) for r in rows], rounds=rounds, learning_rate=LR,
                     batch_size=BATCH, seed=seed,
                     evaluate=lambda m: accuracy(m, digits.X_test, digits.y_test))  # fmt: skip
    return {name: curve[-1] for name, curve in curves.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and seeds")
    config = QUICK if parser.parse_args(argv).quick else FULL
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    speed = simulation_speed(config["sim_rounds"])
    lines = [
        "## Federated learning",
        "",
        f"**Simulation speed.** Seconds per round of 1,000 in-process clients sharing digits' "
        f"{len(load_digits(0).X_train)} training rows (one or two rows each), MLP 64-32-10, "
        f"batch 8, torch on 1 thread; median over {config['sim_rounds']} rounds (the first "
        "round warms up).",
        "",
        "| local work | median s / round | first round |",
        "|---|---:|---:|",
        *(
            f"| {name} | {statistics.median(s[1:] or s):.2f} | {s[0]:.2f} |"
            for name, s in speed.items()
        ),
        "",
        f"**FedAvg against centralized and local-only training**, test accuracy after "
        f"{config['rounds']} rounds of one local epoch (centralized: as many epochs), "
        f"{CLIENTS} clients, median over seeds {list(config['seeds'])}; Dirichlet α "
        "skews the labels.",
        "",
        "| split | centralized | FedAvg | local only (mean) |",
        "|---|---:|---:|---:|",
    ]
    for alpha in SPLITS:
        runs = [final_accuracy(config["rounds"], seed, alpha) for seed in config["seeds"]]
        split = "iid" if alpha is None else f"Dirichlet α = {alpha}"
        cells = " | ".join(
            f"{statistics.median(r[k] for r in runs):.3f}"
            for k in ("centralized", "FedAvg", "local only")
        )
        lines.append(f"| {split} | {cells} |")
    lines += ["", f"1-minute load average {load:.1f} on {os.cpu_count()} cores at the start."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
