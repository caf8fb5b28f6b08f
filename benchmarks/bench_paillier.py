"""Encrypted aggregation: packed Paillier vectors against phe encrypting one value at a time.

Owners each encrypt a vector of floats under one key, an aggregator sums the ciphertexts,
and the key holder decrypts the sum. The packed path (``om_teach.crypto.paillier``) runs on
every value. The naive path (``public_key.encrypt`` per value, ``+``, ``decrypt`` per value)
may run on a prefix of each vector; its times are then scaled linearly, since every one of its
steps is per value. Both paths run in this one process, one after the other, on one core.

Run ``python benchmarks/bench_paillier.py [--quick]``. It prints a markdown section to stdout.
"""

from __future__ import annotations

import argparse
import functools
import operator
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from phe import PaillierPrivateKey, PaillierPublicKey
from phe.util import powmod

from om_teach.crypto.paillier import (
    EncryptedVector,
    ObfuscatorPool,
    PackingLayout,
    generate_keypair,
)

PRECISION = 1e-6
MAX_ABS = 1.0
FULL = {"owners": 10, "values": 10_000, "naive_values": 1_000, "key_bits": 2048}
QUICK = {"owners": 1, "values": 200, "naive_values": 200, "key_bits": 1024}


def timed(work: Callable[[], Any]) -> tuple[Any, float]:
    """The result of ``work()`` and the CPU seconds this process spent on it."""
    start = time.process_time()
    result = work()
    return result, time.process_time() - start


def run_packed(
    public_key: PaillierPublicKey, private_key: PaillierPrivateKey, data: np.ndarray
) -> dict[str, Any]:
    """Precompute every owner's obfuscators, then encrypt, sum and decrypt."""
    owners, length = data.shape
    layout = PackingLayout(public_key.n.bit_length(), PRECISION, MAX_ABS, owners)
    per_owner = layout.ciphertexts_for(length)
    pools, precompute = timed(lambda: [ObfuscatorPool(public_key, per_owner) for _ in data])
    encrypt_kw = {"precision": PRECISION, "max_abs": MAX_ABS, "max_summands": owners}
    vectors, encrypt = timed(
        lambda: [
            EncryptedVector.encrypt(public_key, row, **encrypt_kw, pool=pool)
            for row, pool in zip(data, pools, strict=True)
        ]
    )
    total, add = timed(lambda: EncryptedVector.sum(vectors))
    result, decrypt = timed(lambda: total.decrypt(private_key))
    return {
        "layout": layout,
        "ciphertexts": owners * per_owner,
        "precompute": precompute,
        "encrypt": encrypt,
        "sum": add,
        "decrypt": decrypt,
        "error": float(np.max(np.abs(result - data.sum(axis=0)))),
    }


def run_naive(
    public_key: PaillierPublicKey, private_key: PaillierPrivateKey, data: np.ndarray
) -> dict[str, Any]:
    """phe one value at a time: encrypt each float, add per index with ``+``, decrypt each."""
    encrypted, encrypt = timed(
        lambda: [[public_key.encrypt(float(x), precision=PRECISION) for x in row] for row in data]
    )
    sums, add = timed(
        lambda: [functools.reduce(operator.add, column) for column in zip(*encrypted, strict=True)]
    )
    result, decrypt = timed(lambda: np.array([private_key.decrypt(s) for s in sums]))
    return {
        "ciphertexts": data.size,
        "encrypt": encrypt,
        "sum": add,
        "decrypt": decrypt,
        "error": float(np.max(np.abs(result - data.sum(axis=0)))),
    }


def powmod_seconds(public_key: PaillierPublicKey, repeats: int = 21) -> float:
    """Median time of one ``powmod(r, n, n²)``: the obfuscation every ciphertext needs."""
    r = public_key.get_random_lt_n()
    times = [timed(lambda: powmod(r, public_key.n, public_key.nsquare))[1] for _ in range(repeats)]
    return statistics.median(times)


def seconds(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def report(
    config: dict[str, int], packed: dict[str, Any], naive: dict[str, Any], floor: float
) -> str:
    owners, values, naive_values = config["owners"], config["values"], config["naive_values"]
    scale = values / naive_values
    naive = {k: v * scale if k in ("encrypt", "sum", "decrypt") else v for k, v in naive.items()}
    layout = packed["layout"]
    packed_work = packed["encrypt"] + packed["sum"] + packed["decrypt"]
    packed_total = packed["precompute"] + packed_work
    naive_total = naive["encrypt"] + naive["sum"] + naive["decrypt"]
    floor_total = floor * packed["ciphertexts"]
    naive_note = (
        f"measured on the first {naive_values:,} values of each owner and scaled ×{scale:g}"
        if scale != 1
        else "measured on every value"
    )
    rows = [
        ("ciphertexts", f"{packed['ciphertexts']:,}", f"{owners * values:,}", ""),
        ("precompute obfuscators", seconds(packed["precompute"]), "(inside encrypt)", ""),
        ("encrypt", seconds(packed["encrypt"]), seconds(naive["encrypt"]), ""),
        ("sum (aggregator)", seconds(packed["sum"]), seconds(naive["sum"]), ""),
        ("decrypt (key holder)", seconds(packed["decrypt"]), seconds(naive["decrypt"]), ""),
        (
            "end to end, precompute excluded",
            seconds(packed_work),
            seconds(naive_total),
            f"{naive_total / packed_work:.0f}×",
        ),
        (
            "**end to end, precompute included**",
            f"**{seconds(packed_total)}**",
            f"**{seconds(naive_total)}**",
            f"**{naive_total / packed_total:.0f}×**",
        ),
        ("largest error of the sum", f"{packed['error']:.1e}", f"{naive['error']:.1e}", ""),
        (
            "floor: one powmod(r, n, n²) per packed ciphertext",
            f"{floor * 1e3:.2f} ms × {packed['ciphertexts']:,} = {seconds(floor_total)}",
            "",
            f"packed end to end is {packed_total / floor_total:.2f}× the floor",
        ),
    ]
    lines = [
        "## Encrypted aggregation",
        "",
        f"{owners} owner(s) each encrypt {values:,} floats drawn uniformly from "
        f"[-{MAX_ABS:g}, {MAX_ABS:g}] under one {config['key_bits']}-bit Paillier key (phe 1.5 "
        f"with gmpy2). An aggregator sums the ciphertexts, and the key holder decrypts the sum. "
        f"Packed: precision {PRECISION:g} on the sum of up to {owners}, so {layout.slot_bits}-bit "
        f"slots and {layout.slots} values to a ciphertext. Each owner's obfuscators are "
        f"precomputed in an `ObfuscatorPool`, then encrypted, summed with `EncryptedVector.sum` "
        f"and decrypted. Naive: `public_key.encrypt(x, precision={PRECISION:g})` per value, "
        f"`+` across owners, and `decrypt` per value, {naive_note}. Times are the CPU seconds of "
        "this one process (`time.process_time`; everything runs on one core) from a single run. "
        "The machine is shared with other jobs, which CPU time feels less than wall time does; "
        "still, trust the ratios more than the absolute times.",
        "",
        "| stage | packed (om_teach) | naive phe, one value a ciphertext | speed-up |",
        "|---|---:|---:|---:|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 owner × 200 values, 1024 bits")
    config = QUICK if parser.parse_args(argv).quick else FULL
    public_key, private_key = generate_keypair(config["key_bits"])
    data = np.random.default_rng(0).uniform(-MAX_ABS, MAX_ABS, (config["owners"], config["values"]))
    floor = powmod_seconds(public_key)
    packed = run_packed(public_key, private_key, data)
    naive = run_naive(public_key, private_key, data[:, : config["naive_values"]])
    if packed["error"] > PRECISION:
        raise SystemExit(f"packed sum is off by {packed['error']:.3g}, beyond {PRECISION:g}")
    print(report(config, packed, naive, floor))


if __name__ == "__main__":
    main()
