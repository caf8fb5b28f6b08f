"""FedAvg simulation against Flower's, side by side in one run: 100 clients, a 9,610-parameter
network (64-128-10), 5 rounds of 2 local SGD steps of batch 8 (learning rate 0.1) on iid shards
of scikit-learn's digits, from the same initial weights. Ours is om_teach.fl.simulation in this
process; Flower's is its Ray simulation engine (``flwr.simulation.start_simulation``) in
build/flower, a venv of its own since flwr[simulation] cannot be installed against the project's
constraints (``make bench`` makes it; it borrows torch and numpy from this venv through a .pth
file placed after its own packages). Both report wall time for the rounds and the test accuracy
of the final model; their local batches are drawn by different generators.

Run ``python benchmarks/bench_flower.py [--quick]``; --quick runs our side only (the tests have
no Flower venv). It prints a markdown section to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from om_teach.data.digits import load_digits
from om_teach.data.partition import iid
from om_teach.fl.client import get_params
from om_teach.fl.models import accuracy
from om_teach.fl.simulation import simulate
from om_teach.fl.strategy import FedAvg

ROOT = Path(__file__).resolve().parents[1]
FLOWER = ROOT / "build" / "flower" / "bin" / "python"
CONFIG = {"clients": 100, "rounds": 5, "steps": 2, "batch_size": 8, "learning_rate": 0.1}


def network(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def ours(shards, digits) -> dict:
    model = network()
    start = time.perf_counter()
    simulate(
        model,
        shards,
        FedAvg(),
        rounds=CONFIG["rounds"],
        learning_rate=CONFIG["learning_rate"],
        batch_size=CONFIG["batch_size"],
        steps=CONFIG["steps"],
        seed=0,
    )
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "accuracy": accuracy(model, digits.X_test, digits.y_test)}


def flower(shards, digits) -> dict:
    with tempfile.TemporaryDirectory(prefix="om-teach-flower-") as folder:
        workload = Path(folder) / "workload.npz"
        arrays = {f"X{i}": X for i, (X, _) in enumerate(shards)}
        arrays |= {f"y{i}": y for i, (_, y) in enumerate(shards)}
        arrays |= {f"w{i}": w for i, w in enumerate(get_params(network()))}
        np.savez(
            workload,
            config=json.dumps(CONFIG),
            X_test=digits.X_test,
            y_test=digits.y_test,
            **arrays,
        )
        out = subprocess.run(
            [str(FLOWER), str(ROOT / "benchmarks" / "flower_side.py"), str(workload)],
            capture_output=True,
            text=True,
            timeout=1200,
        )
    if out.returncode != 0:
        raise RuntimeError(f"Flower's side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="our side only")
    quick = parser.parse_args(argv).quick
    torch.set_num_threads(1)
    digits = load_digits(0)
    shards = [
        (digits.X_train[r], digits.y_train[r])
        for r in iid(len(digits.X_train), CONFIG["clients"], seed=0)
    ]
    load = os.getloadavg()[0]
    results = {"om_teach.fl.simulation (in process)": ours(shards, digits)}
    if not quick:
        theirs = flower(shards, digits)
        results[f"Flower {theirs['flwr']} simulation (Ray)"] = theirs
    lines = [
        "## FedAvg simulation against Flower",
        "",
        f"{CONFIG['clients']} clients, 9,610 parameters, {CONFIG['rounds']} rounds of "
        f"{CONFIG['steps']} local steps (batch {CONFIG['batch_size']}), iid digits, the same "
        "initial weights; wall time of the rounds (Flower's includes starting Ray).",
        "",
        "| simulation | seconds | test accuracy |",
        "|---|---:|---:|",
        *(f"| {name} | {r['seconds']:.2f} | {r['accuracy']:.3f} |" for name, r in results.items()),
    ]
    if len(results) == 2:
        a, b = (r["seconds"] for r in results.values())
        lines += ["", f"Flower / om_teach wall time: {b / a:.1f}×."]
    lines += ["", f"1-minute load average {load:.1f} on {os.cpu_count()} cores at the start."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
