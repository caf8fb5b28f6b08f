"""FedAvg against Flower, side by side in one run, simulated and served: 100 clients, a
9,610-parameter network (64-128-10), 5 rounds of 2 local SGD steps of batch 8 (learning rate
0.1) on iid shards of scikit-learn's digits, from the same initial weights.

- Simulated: om_teach.fl.simulation in this process, against Flower's Ray simulation engine
  (``flwr.simulation.start_simulation``).
- Served: our node (uvicorn on 127.0.0.1, SQLite, 5 plain cycles) with 100 workers as threads of
  this process, each on its own HTTP connection, against Flower's gRPC server
  (``flwr.server.start_server``) with 100 ``start_client`` threads on loopback.

Flower runs in build/flower, a venv of its own since flwr[simulation] cannot be installed against
the project's constraints (``make bench`` makes it; it borrows torch and numpy from this venv
through a .pth file placed after its own packages). Each reports wall time for the rounds and the
test accuracy of the final model; local batches are drawn by different generators, and our node
weighs each report by the examples it trained on (16 for all), Flower by shard size (14 or 15).

Run ``python benchmarks/bench_flower.py [--quick]``; --quick runs our side only, with 10 clients
(the tests have no Flower venv). It prints a markdown section to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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
from om_teach.node.auth import issue
from om_teach.node.client import NodeClient
from om_teach.node.process import NodeProcess
from om_teach.node.worker import train_one_cycle

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


def ours_served(shards, digits) -> dict:
    with tempfile.TemporaryDirectory(prefix="om-teach-bench-served-") as folder:
        data = Path(folder)
        owner = issue(data, ["upload", "read"])
        tokens = [issue(data, ["train", "read"]) for _ in shards]
        with NodeProcess(data) as node:
            scientist = NodeClient(node.url, owner)
            scientist.create_model("served", "digits-mlp-wide")
            scientist.upload("served", network())
            client = {k: CONFIG[k] for k in ("batch_size", "learning_rate")}
            client["local_steps"] = CONFIG["steps"]
            server = {
                "cycles": CONFIG["rounds"],
                "min_workers": 1,
                "max_workers": len(shards),
                "min_reports": len(shards),
                "cycle_seconds": 600,
            }
            pid = scientist.create_process("served", client, server)["id"]

            def work(i: int, cycle: int) -> dict:
                with NodeClient(node.url, tokens[i], timeout=300) as c:
                    return train_one_cycle(c, pid, *shards[i], seed=1000 * cycle + i)

            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=len(shards)) as pool:
                for cycle in range(CONFIG["rounds"]):
                    answers = list(pool.map(work, range(len(shards)), [cycle] * len(shards)))
                    assert all(a["status"] == "counted" for a in answers), answers[:3]
            seconds = time.perf_counter() - start
            final = scientist.load("served", CONFIG["rounds"] + 1)
    return {"seconds": seconds, "accuracy": accuracy(final, digits.X_test, digits.y_test)}


def flower(shards, digits, mode: str) -> dict:
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
            [str(FLOWER), str(ROOT / "benchmarks" / "flower_side.py"), str(workload), mode],
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
    if quick:
        CONFIG["clients"] = 10
    torch.set_num_threads(1)
    digits = load_digits(0)
    shards = [
        (digits.X_train[r], digits.y_train[r])
        for r in iid(len(digits.X_train), CONFIG["clients"], seed=0)
    ]
    load = os.getloadavg()[0]
    pairs = {"simulated": [("om_teach.fl.simulation (in process)", ours(shards, digits))]}
    pairs["served"] = [("om_teach node, 5 cycles (uvicorn, SQLite)", ours_served(shards, digits))]
    if not quick:
        theirs = flower(shards, digits, "simulation")
        pairs["simulated"].append((f"Flower {theirs['flwr']} simulation (Ray)", theirs))
        theirs = flower(shards, digits, "served")
        pairs["served"].append(
            (f"Flower {theirs['flwr']} gRPC server, clients on loopback", theirs)
        )
    lines = [
        "## FedAvg against Flower, simulated and served",
        "",
        f"{CONFIG['clients']} clients, 9,610 parameters, {CONFIG['rounds']} rounds of "
        f"{CONFIG['steps']} local steps (batch {CONFIG['batch_size']}), iid digits, the same "
        "initial weights; wall time of the rounds (Flower's simulation includes starting Ray; "
        "the served runs start once the server listens).",
        "",
        "| run | seconds | test accuracy |",
        "|---|---:|---:|",
    ]
    for runs in pairs.values():
        lines += [f"| {name} | {r['seconds']:.2f} | {r['accuracy']:.3f} |" for name, r in runs]
    for kind, runs in pairs.items():
        if len(runs) == 2:
            (_, a), (_, b) = runs
            lines += [
                "",
                f"{kind.capitalize()}: Flower / om_teach wall time "
                f"{b['seconds'] / a['seconds']:.1f}×.",
            ]
    lines += ["", f"1-minute load average {load:.1f} on {os.cpu_count()} cores at the start."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
