"""The node's predict endpoint: requests per second and latency (p50, p99) with 1 and with 16
concurrent clients, against a real uvicorn on 127.0.0.1 (one worker, SQLite), each request one
digit through the digits-mlp. Goal: p99 under 50 ms at 16 clients on 2 cores.

Run ``python benchmarks/bench_node.py [--quick]``. It prints a markdown section to stdout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from safetensors.torch import save as save_safetensors

from om_teach.fl.models import mlp
from om_teach.node.auth import issue
from om_teach.node.client import NodeClient
from om_teach.node.process import NodeProcess

FULL = {"requests": 2000, "warmup": 100}
QUICK = {"requests": 100, "warmup": 20}


def run(port: int, token: str, clients: int, requests: int) -> tuple[float, list[float]]:
    """Seconds for ``requests`` predictions spread over ``clients`` threads, and each latency.
    The load comes from http.client on keep-alive connections, which costs the shared cores
    less than the node's Python client would (its own cost is in the last table row)."""
    rows = np.random.default_rng(0).random((requests, 64))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(share: np.ndarray) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port)
        mine = []
        for row in share:
            body = json.dumps({"inputs": [row.tolist()]})
            start = time.perf_counter()
            connection.request("POST", "/models/digits/predict", body, headers)
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - start)
            assert response.status == 200, response.status
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(rows[i::clients],)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies


def _row(label: str, requests: int, seconds: float, latencies: list[float]) -> str:
    p50 = statistics.median(latencies) * 1000
    p99 = float(np.percentile(latencies, 99)) * 1000
    return f"| {label} | {requests / seconds:.0f} | {p50:.1f} | {p99:.1f} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    config = QUICK if parser.parse_args(argv).quick else FULL
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="om-teach-bench-node-") as folder:
        data = Path(folder)
        token = issue(data, ["read", "upload"], name="bench")
        lines = [
            "## Node: predict",
            "",
            f"{config['requests']} requests of one digit each (digits-mlp, public model, with a "
            "read token) to a uvicorn node on 127.0.0.1 with SQLite, from threads on keep-alive "
            "connections sharing the same 2 cores. Goal: p99 under 50 ms at 16 clients.",
            "",
            "| workers, clients | requests/s | p50 ms | p99 ms |",
            "|---|---:|---:|---:|",
        ]
        for workers in (1, 2):
            with NodeProcess(data, workers=workers) as node, NodeClient(node.url, token) as client:
                client.create_model("digits", "digits-mlp")
                client.upload("digits", save_safetensors(mlp(0).state_dict()))
                run(node.port, token, 4, config["warmup"])
                for clients in (1, 16):
                    seconds, latencies = run(node.port, token, clients, config["requests"])
                    lines.append(
                        _row(f"{workers}, {clients}", config["requests"], seconds, latencies)
                    )
                if workers == 1:  # the Python client's own cost, one client
                    start, latencies = time.perf_counter(), []
                    for _ in range(config["requests"] // 4):
                        begin = time.perf_counter()
                        client.predict("digits", [[0.5] * 64])
                        latencies.append(time.perf_counter() - begin)
                    client_row = _row(
                        "1, 1 (NodeClient)", len(latencies), time.perf_counter() - start, latencies
                    )
        lines.append(client_row)
    lines += ["", f"1-minute load average {load:.1f} on {os.cpu_count()} cores at the start."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
