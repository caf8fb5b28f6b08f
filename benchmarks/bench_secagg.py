"""Secure aggregation (Bonawitz et al., CCS 2017) against a plain sum: time and bytes.

Every client of every row is simulated in this one process (``om_teach.crypto.secagg.run_secagg``),
one after another on one core, and every run checks its total against the plain sum of the
survivors. 10% of the clients drop after sharing their keys, before sending their masked input:
the costly case for the server, which rebuilds each dropped client's mask key from the others'
shares and expands that client's pairwise mask with every survivor once more.

Run ``python benchmarks/bench_secagg.py [--quick]``. It prints a markdown section to stdout.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np

from om_teach.crypto.secagg import run_secagg

DROPOUT = 0.10
FULL = {
    "scale": [(100, 10_000), (500, 10_000), (1000, 10_000)],
    "expansion": (100, 2**20),
}
QUICK = {"scale": [(10, 1000)], "expansion": (10, 2**12)}
BONAWITZ_EXPANSION = 1.73  # 2^10 users, 2^20 16-bit values (Bonawitz et al. 2017, abstract)


def measure(clients: int, length: int, *, input_bits: int, ring_bits: int, seed: int) -> dict:
    """One secure run and one plain sum of the same inputs; times in seconds, sizes in bytes."""
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(0, 2**input_bits, length, dtype=np.uint32) for _ in range(clients)]
    dropped = sorted(rng.choice(clients, round(DROPOUT * clients), replace=False).tolist())
    threshold = clients // 2 + 1
    result = run_secagg(inputs, threshold, bits=ring_bits, drop_after={"share_keys": dropped})
    survivors = list(result.survivors)
    start = time.perf_counter()
    plain = np.sum([inputs[u] for u in survivors], axis=0, dtype=np.uint64) % 2**ring_bits
    plain_seconds = time.perf_counter() - start
    if not np.array_equal(result.total, plain):
        raise AssertionError(f"{clients} clients x {length}: the secure sum is wrong")
    plain_client_bytes = 4 + math.ceil(input_bits * length / 8)
    return {
        "clients": clients,
        "length": length,
        "threshold": threshold,
        "dropped": len(dropped),
        "client_s": float(np.mean([result.client_seconds[u] for u in survivors])),
        "server_s": result.server_seconds,
        "plain_s": plain_seconds,
        "client_bytes": float(np.mean([result.client_bytes[u] for u in survivors])),
        "total_bytes": sum(result.client_bytes.values()) + result.server_bytes,
        "plain_client_bytes": plain_client_bytes,
        "plain_total_bytes": len(survivors) * plain_client_bytes,
        "input_bits": input_bits,
        "ring_bits": ring_bits,
    }


def scale_table(rows: list[dict]) -> list[str]:
    lines = [
        "| clients | parameters | t | dropped | client s | server s | plain sum s "
        "| KB sent / client | plain KB / client | total MB | plain total MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']:,} | {r['length']:,} | {r['threshold']} | {r['dropped']} "
            f"| {r['client_s']:.3g} | {r['server_s']:.3g} | {r['plain_s']:.2g} "
            f"| {r['client_bytes'] / 1e3:,.1f} | {r['plain_client_bytes'] / 1e3:,.1f} "
            f"| {r['total_bytes'] / 1e6:,.2f} | {r['plain_total_bytes'] / 1e6:,.2f} |"
        )
    return lines


def expansion_table(rows: list[dict]) -> list[str]:
    lines = [
        "| clients | parameters | input bits | ring bits | client s | server s "
        "| bytes sent / client | plain input bytes | expansion | Bonawitz et al. |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        plain = math.ceil(r["input_bits"] * r["length"] / 8)
        paper = f"{BONAWITZ_EXPANSION}× (2^10 users)" if r["input_bits"] == 16 else ""
        lines.append(
            f"| {r['clients']:,} | {r['length']:,} | {r['input_bits']} | {r['ring_bits']} "
            f"| {r['client_s']:.3g} | {r['server_s']:.3g} | {r['client_bytes']:,.0f} "
            f"| {plain:,} | {r['client_bytes'] / plain:.3f}× | {paper} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    config = QUICK if parser.parse_args().quick else FULL
    scale = [
        measure(n, d, input_bits=32, ring_bits=32, seed=i)
        for i, (n, d) in enumerate(config["scale"])
    ]
    n, d = config["expansion"]
    wide = 16 + math.ceil(math.log2(n))
    expansion = [
        measure(n, d, input_bits=32, ring_bits=32, seed=100),
        measure(n, d, input_bits=16, ring_bits=wide, seed=101),
    ]
    print("## Secure aggregation\n")
    print(
        "Bonawitz et al.'s honest-but-curious protocol (`om_teach.crypto.secagg`: X25519 key "
        "agreement, AES-256-CTR masks, Shamir t-of-n over GF(2^521 - 1), AES-GCM for the routed "
        "shares) against a plain sum of the same vectors, with the threshold t = n/2 + 1. Every "
        "client is simulated, one after another in one process on one core "
        f"({platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} "
        "cores on the machine). "
        f"{DROPOUT:.0%} of the clients drop after sharing their keys and before sending their "
        "masked input: the costly case for the server, which rebuilds each dropped client's mask "
        "key and expands its pairwise mask with every survivor. *Client s* is the mean, over the "
        "clients that finished, of the time spent in the four rounds (key generation and "
        "agreement, Shamir sharing, AES-GCM, masking, revealing shares); *server s* is the time "
        "in the server's four rounds (routing, Shamir reconstruction, unmasking); *plain sum s* "
        "is numpy adding the same survivors' vectors. Bytes follow the messages' wire format "
        "(32-byte keys, 4-byte ids, 66-byte field elements, AES-GCM nonce and tag, vector "
        "elements packed at the ring's bits); *per client* is what one client that finished "
        "sends, *total* adds what every client and the server send. Plain: each client sends "
        "its id and its vector in the clear. Inputs are uniform 32-bit integers summed in "
        "Z_2^32; each secure total was checked against the plain sum.\n"
    )
    print("\n".join(scale_table(scale)))
    print(
        "\nCommunication expansion (bytes a client sends / bytes of its plain input) at "
        f"{d:,} parameters. Bonawitz et al. report {BONAWITZ_EXPANSION}× for 2^10 users and "
        "2^20 16-bit values, with the masked values in a ring wide enough that the sum cannot "
        f"wrap; the 16-bit row does the same with {wide} = 16 + ⌈log2 {n}⌉ bits.\n"
    )
    print("\n".join(expansion_table(expansion)))


if __name__ == "__main__":
    main()
