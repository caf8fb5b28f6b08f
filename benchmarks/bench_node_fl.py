"""One model-centric FL cycle on a real node, with and without secure aggregation: W workers
(threads of this process, each on its own HTTP connection) train a 9,610-parameter network
(digits-mlp-wide) for 2 local steps of batch 8 on iid digits and report to one cycle served by
uvicorn on 127.0.0.1 (one worker, SQLite). Plain: each worker uploads its weights, and the node
averages them. Secure: each sends its masked change through the four rounds of secure
aggregation, and the node unmasks only the sum. Wall time from the first cycle-request to the
published version, and the bytes each worker sent; the two cycles run side by side, alternating.

Run ``python benchmarks/bench_node_fl.py [--quick]``. It prints a markdown section to stdout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

from om_teach.data.digits import load_digits
from om_teach.data.partition import iid
from om_teach.node import architectures
from om_teach.node.auth import issue
from om_teach.node.client import NodeClient
from om_teach.node.process import NodeProcess
from om_teach.node.worker import train_one_cycle, train_one_secure_cycle

FULL = {"workers": 100, "repeats": 3}
QUICK = {"workers": 6, "repeats": 1}
CLIENT = {"batch_size": 8, "learning_rate": 0.1, "local_steps": 2}


class Counted(httpx.HTTPTransport):
    """Counts the bytes a worker sends: bodies plus a request line and headers."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        head = len(request.method) + len(str(request.url.raw_path)) + 12
        head += sum(len(k) + len(v) + 4 for k, v in request.headers.raw)
        self.sent += head + len(request.content)
        return super().handle_request(request)


def one_cycle(node, owner: str, tokens, shards, secure: bool, name: str) -> dict:
    scientist = NodeClient(node.url, owner)
    scientist.create_model(name, "digits-mlp-wide")
    torch.manual_seed(0)
    scientist.upload(name, architectures.get("digits-mlp-wide").build())
    server = {
        "cycles": 1,
        "min_workers": 1,
        "max_workers": len(shards),
        "min_reports": max(2, len(shards) * 2 // 3),
        "cycle_seconds": 600,
        "secure_aggregation": secure,
    }
    pid = scientist.create_process(name, CLIENT, server)["id"]
    transports = [Counted() for _ in shards]

    def work(i: int) -> dict:
        with NodeClient(node.url, tokens[i], transport=transports[i], timeout=300) as c:
            train = train_one_secure_cycle if secure else train_one_cycle
            return train(c, pid, *shards[i], seed=i)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(shards)) as pool:
        answers = list(pool.map(work, range(len(shards))))
    seconds = time.perf_counter() - start
    want = "closed" if secure else "counted"
    assert all(a["status"] == want for a in answers), answers[:3]
    [cycle] = scientist.process(pid)["cycles"]
    assert cycle["status"] == "closed", cycle
    return {"seconds": seconds, "sent": statistics.median(t.sent for t in transports)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    config = QUICK if parser.parse_args(argv).quick else FULL
    torch.set_num_threads(1)
    digits = load_digits(0)
    shards = [
        (digits.X_train[r], digits.y_train[r])
        for r in iid(len(digits.X_train), config["workers"], seed=0)
    ]
    load = os.getloadavg()[0]
    results: dict[bool, list[dict]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="om-teach-bench-fl-") as folder:
        data = Path(folder)
        owner = issue(data, ["upload", "read"])
        tokens = [issue(data, ["train", "read"]) for _ in shards]
        with NodeProcess(data) as node:
            one_cycle(node, owner, tokens, shards, True, "bench-warm-up")  # imports, caches
            for repeat in range(config["repeats"]):
                for secure in (False, True):
                    name = f"bench-{'secure' if secure else 'plain'}-{repeat}"
                    results[secure].append(one_cycle(node, owner, tokens, shards, secure, name))
    plain, secure = (
        {k: statistics.median(r[k] for r in results[s]) for k in ("seconds", "sent")}
        for s in (False, True)
    )
    lines = [
        "## One FL cycle on the node, with and without secure aggregation",
        "",
        f"{config['workers']} workers, 9,610 parameters, 2 local steps of batch 8, one uvicorn "
        f"worker on SQLite; medians of {config['repeats']} cycles each, alternating.",
        "",
        "| cycle | seconds | KB sent per worker |",
        "|---|---:|---:|",
        f"| plain (weights in the clear) | {plain['seconds']:.2f} | {plain['sent'] / 1e3:.1f} |",
        f"| secure aggregation | {secure['seconds']:.2f} | {secure['sent'] / 1e3:.1f} |",
        "",
        f"Secure / plain: {secure['seconds'] / plain['seconds']:.1f}× the time, "
        f"{secure['sent'] / plain['sent']:.1f}× the bytes. 1-minute load average {load:.1f} on "
        f"{os.cpu_count()} cores at the start.",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
