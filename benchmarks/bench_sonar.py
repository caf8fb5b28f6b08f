"""Sonar: where a round's time goes, and python-paillier's federated example against om_teach.

Part 1 runs Sonar's Hydrogen rounds (the scientist holds the key) with every party in this
one process, on eth-tester and on anvil, calling the library's pieces one by one (the mine's
gradient, clip, encryption, the store, the contract's calls, the homomorphic sum, the
decryption) with a wall-clock timer around each stage. Part 2 re-implements the workload of
python-paillier's ``examples/federated_learning_with_encryption.py`` (diabetes, 5 hospitals,
1024-bit keys, 50 iterations, step 1.5): each hospital encrypts its gradient value by value
with phe, the encrypted vector goes around the ring, each hospital adds its own, and the server
decrypts the total. The same workload runs through om_teach (one packed ``EncryptedVector`` per
hospital, ``EncryptedVector.sum``, one decryption per iteration), iteration by iteration in
lockstep with the ring, so that both feel the same load. Part 3 prices Helium's defences: the
same capsule rounds with each contribution sealed to the capsule and signed, and with bare
ciphertexts (the defences off), one round of each in turn, and each piece of a contribution
alone.

Run ``python benchmarks/bench_sonar.py [--quick]``. It prints a markdown section to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from phe import PaillierPrivateKey, PaillierPublicKey

from om_teach.crypto.paillier import EncryptedVector, generate_keypair
from om_teach.privacy.updates import clip
from om_teach.sonar.chain import Chain, find_anvil
from om_teach.sonar.contract import ModelRepository, compile_contract
from om_teach.sonar.contribution import Context, ciphertext_digest, open_sealed, seal
from om_teach.sonar.mine import round_model_cid
from om_teach.sonar.model import ModelBundle, canonical_json, gradient, mse, train_federated
from om_teach.sonar.platform import ETHER, Settings, in_process, owner_rows
from om_teach.storage import DirectoryStore

FULL = {"key_bits": 2048, "rounds": 5, "ring_iterations": 50, "repeats": 50}
QUICK = {"key_bits": 1024, "rounds": 1, "ring_iterations": 5, "repeats": 5}
STAGES = (
    ("training", "mines: gradient on their rows, clipped to C"),
    ("encryption", "mines: `EncryptedVector.encrypt` under the round's key"),
    ("storage", "JSON and `DirectoryStore` put/get: model bundles, ciphertexts"),
    ("chain views", "`current_round`, the model's CID, `gradient_cids`"),
    ("chain transactions", "`submit_gradient` × mines, `evaluate_round`, `pay_round`"),
    ("sum", "scientist: `EncryptedVector.sum` of the ciphertexts"),
    ("decryption", "scientist: decrypt the sum"),
    ("update", "scientist: step the model, validation MSE"),
)
CALLS = ("post_model", "submit_gradient", "evaluate_round", "pay_round")
HELIUM_CALLS = ("submit_gradient", "settle_round", "evaluate_round", "pay_round")

RING = {"hospitals": 5, "key_bits": 1024, "eta": 1.5, "seed": 43, "test_rows": 50}
RING_PRECISION = 1e-6
RING_MAX_ABS = 1_000.0


class Stopwatch:
    """Seconds per stage on ``clock`` (wall time by default), summed over every
    ``with stopwatch(stage):`` block."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = self.clock()
        try:
            yield
        finally:
            self.seconds[stage] += self.clock() - start


def sonar_round(
    repository: ModelRepository,
    store: DirectoryStore,
    keys: tuple[PaillierPublicKey, PaillierPrivateKey],
    mines: list[tuple[str, np.ndarray, np.ndarray]],
    scientist: str,
    model_id: int,
    bundle: ModelBundle,
    validation: tuple[np.ndarray, np.ndarray],
) -> tuple[ModelBundle, dict[str, float]]:
    """One round, piece by piece, as :class:`~om_teach.sonar.mine.Mine` and
    :class:`~om_teach.sonar.scientist.Scientist` run it, with a timer around each piece."""
    public_key, private_key = keys
    clock = Stopwatch()
    with clock("chain views"):
        round = repository.current_round(model_id)
    for account, X, y in mines:
        with clock("chain views"):
            cid = round_model_cid(repository, model_id, round)
        with clock("storage"):
            model = ModelBundle.from_bytes(store.get(cid))
        model.check_features(X.shape[1])
        with clock("training"):
            update = clip(
                gradient(X, y, np.array(model.weights), model.bias), clip_norm=model.clip_norm
            )
        with clock("encryption"):
            vector = EncryptedVector.encrypt(
                PaillierPublicKey(model.public_key_n),
                update,
                precision=model.precision,
                max_abs=model.max_abs,
                max_summands=model.max_summands,
            )
        with clock("storage"):
            stored = store.put(canonical_json(vector.to_dict()))
        with clock("chain transactions"):
            repository.submit_gradient(model_id, round, stored, sender=account)
    with clock("chain views"):
        cids = repository.gradient_cids(model_id, round)
    with clock("storage"):
        vectors = [
            EncryptedVector.from_dict(json.loads(store.get(c)), public_key=public_key) for c in cids
        ]
    with clock("sum"):
        total = EncryptedVector.sum(vectors)
    with clock("decryption"):
        plain = total.decrypt(private_key)
    with clock("update"):
        new = bundle.stepped(plain / len(vectors))
        error = mse(*validation, np.array(new.weights), new.bias)
    with clock("storage"):
        new_cid = store.put(new.to_bytes())
    with clock("chain transactions"):
        repository.evaluate_round(model_id, round, new_cid, error, sender=scientist)
        repository.pay_round(model_id, round, sender=scientist)
    return new, dict(clock.seconds)


def run_sonar(chain: Chain, config: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Deploy, post the zero model, run the rounds; per-stage seconds of each round and gas."""
    shards, split = owner_rows(settings)
    keys = generate_keypair(settings.key_bits)
    with tempfile.TemporaryDirectory(prefix="bench-sonar-") as folder:
        store = DirectoryStore(Path(folder))
        repository = ModelRepository.deploy(chain)
        scientist, accounts = chain.accounts[0], chain.accounts[1 : settings.mines + 1]
        bundle = ModelBundle(
            weights=(0.0,) * split.X_val.shape[1],
            bias=0.0,
            public_key_n=keys[0].n,
            precision=settings.precision,
            max_abs=settings.clip_norm,
            max_summands=settings.mines,
            clip_norm=settings.clip_norm,
            learning_rate=settings.learning_rate,
            round=0,
        )
        validation = (split.X_val, split.y_val)
        start = time.perf_counter()
        cid = store.put(bundle.to_bytes())
        model_id, _ = repository.post_model(
            cid,
            bounty=round(settings.bounty_eth * ETHER),
            initial_error=mse(*validation, np.array(bundle.weights), bundle.bias),
            target_error=settings.target_error,
            sender=scientist,
        )
        post_seconds = time.perf_counter() - start
        mines = [(a, X, y) for a, (X, y) in zip(accounts, shards, strict=True)]
        rounds = []
        for _ in range(config["rounds"]):
            bundle, stages = sonar_round(
                repository, store, keys, mines, scientist, model_id, bundle, validation
            )
            rounds.append(stages)
    expected_w, expected_b = train_federated(
        shards,
        steps=config["rounds"],
        learning_rate=settings.learning_rate,
        clip_norm=settings.clip_norm,
    )
    deviation = float(np.max(np.abs(bundle.params - np.append(expected_w, expected_b))))
    if deviation > 1e-6:
        raise SystemExit(f"{chain.name}: encrypted rounds are {deviation:.3g} off the plaintext")
    return {
        "post": post_seconds,
        "rounds": rounds,
        "gas": {call: list(repository.gas[call]) for call in CALLS},
        "deviation": deviation,
    }


def run_helium(config: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Helium rounds sealed and bare, in turn, on eth-tester; then one mine's contribution,
    piece by piece, ``repeats`` times: encrypt, seal and sign, verify and open, digest."""
    federations = {
        "sealed and signed": in_process(settings, helium=True),
        "bare (defences off)": in_process(settings, helium=True, sealed=False),
    }
    rounds: dict[str, list[float]] = {name: [] for name in federations}
    for _ in range(config["rounds"]):
        for name, federation in federations.items():
            start = time.perf_counter()
            federation.run_round()
            rounds[name].append(time.perf_counter() - start)
    federation = federations["sealed and signed"]
    mine, capsule = federation.mines[0], federation.capsule
    bundle = mine.fetch_model(federation.repository.current_round(mine.model_id))
    context = Context(
        chain_id=capsule.record.chain_id,
        contract=capsule.record.contract,
        model_id=mine.model_id,
        round=bundle.round,
        mine=mine.account,
    )
    pieces: dict[str, list[float]] = defaultdict(list)
    for _ in range(config["repeats"]):
        start = time.perf_counter()
        vector = mine.encrypted_gradient(bundle)
        encrypted = time.perf_counter()
        sealed = seal(
            vector,
            context,
            sealing_key=capsule.record.sealing_public_key,
            signing_key=mine.signing_key,
        )
        sealed_at = time.perf_counter()
        opened = open_sealed(
            sealed,
            context,
            sealing_key=capsule.state.sealing_key,
            verify_key=mine.signing_key.public_key(),
            public_key=capsule.public_key,
        )
        opened_at = time.perf_counter()
        ciphertext_digest(opened)
        pieces["encrypt"].append(encrypted - start)
        pieces["seal"].append(sealed_at - encrypted)
        pieces["open"].append(opened_at - sealed_at)
        pieces["digest"].append(time.perf_counter() - opened_at)
    return {
        "rounds": rounds,
        "pieces": {name: statistics.median(values) for name, values in pieces.items()},
        "bytes": {"bare": len(canonical_json(vector.to_dict())), "sealed": len(sealed)},
        "gas": {
            name: {call: list(f.repository.gas[call]) for call in HELIUM_CALLS}
            for name, f in federations.items()
        },
    }


def helium_table(helium: dict[str, Any], config: dict[str, Any], mines: int) -> list[str]:
    names = list(helium["rounds"])
    medians = {name: statistics.median(helium["rounds"][name]) for name in names}
    sealed, bare = names
    pieces, size = helium["pieces"], helium["bytes"]
    lines = [
        f"| | {sealed} | {bare} | ratio |",
        "|---|---:|---:|---:|",
        f"| a round, {mines} mines (median of {config['rounds']}) | "
        f"{seconds(medians[sealed])} | {seconds(medians[bare])} | "
        f"{medians[sealed] / medians[bare]:.2f}× |",
        f"| bytes stored per contribution | {size['sealed']:,} | {size['bare']:,} | "
        f"{size['sealed'] / size['bare']:.2f}× |",
    ]
    for call in HELIUM_CALLS:
        cells = " | ".join(gas_cell(helium["gas"][n][call]) for n in names)
        lines.append(f"| gas: `{call}` | {cells} | |")
    lines += [
        "",
        f"| one contribution (median of {config['repeats']}) | time | share of the Paillier "
        "encryption |",
        "|---|---:|---:|",
    ]
    for piece, what in (
        ("encrypt", "the mine encrypts its clipped gradient (Paillier, packed)"),
        ("seal", "the mine seals it to the capsule (HPKE) and signs it (Ed25519)"),
        ("open", "the capsule verifies the signature and opens the box"),
        ("digest", "the capsule's SHA-256 of the ciphertext (the replay check)"),
    ):
        lines.append(
            f"| {what} | {seconds(pieces[piece])} | {pieces[piece] / pieces['encrypt']:.1%} |"
        )
    return lines


def diabetes_hospitals() -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    """The example's data: scikit-learn's scaled diabetes features plus a constant column,
    shuffled (seed 43), 50 random test rows, the rest cut into 5 contiguous (biased) shares."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    X = np.c_[data.data, np.ones(len(data.target))]
    rng = np.random.RandomState(RING["seed"])
    order = rng.permutation(len(X))
    X, y = X[order], data.target[order]
    test = rng.choice(len(X), size=RING["test_rows"], replace=False)
    train = np.ones(len(X), dtype=bool)
    train[test] = False
    X_train, y_train = X[train], y[train]
    share = len(X_train) // RING["hospitals"]
    hospitals = [
        (X_train[share * h : share * (h + 1)], y_train[share * h : share * (h + 1)])
        for h in range(RING["hospitals"])
    ]
    return hospitals, X[test], y[test]


def mean_gradient(X: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The example's gradient: ``(X w - y) · X / rows`` (half the MSE's, bias in the weights)."""
    return (X @ weights - y) @ X / len(X)


def run_ring(iterations: int) -> dict[str, Any]:
    """The phe ring and the packed om_teach sum, one iteration of each in turn on one key, and
    plaintext gradient descent as the reference both must reach."""
    hospitals, X_test, y_test = diabetes_hospitals()
    cpu = Stopwatch(time.process_time)
    with cpu("keygen"):
        public_key, private_key = generate_keypair(RING["key_bits"])
    count, width = len(hospitals), hospitals[0][0].shape[1]
    w_ring, w_packed, w_plain = np.zeros(width), np.zeros(width), np.zeros(width)
    largest = 0.0
    for _ in range(iterations):
        # The example's ring: hospital 1 encrypts, each next one encrypts and adds its own.
        aggregate: list | None = None
        for X, y in hospitals:
            g = mean_gradient(X, y, w_ring)
            with cpu("ring encrypt"):
                encrypted = [public_key.encrypt(float(v)) for v in g]
            if aggregate is not None:
                with cpu("ring add"):
                    encrypted = [a + e for a, e in zip(aggregate, encrypted, strict=True)]
            aggregate = encrypted
        with cpu("ring decrypt"):
            total = np.array([private_key.decrypt(c) for c in aggregate])
        w_ring = w_ring - RING["eta"] * total / count

        gradients = [mean_gradient(X, y, w_packed) for X, y in hospitals]
        largest = max(largest, *(float(np.max(np.abs(g))) for g in gradients))
        with cpu("packed encrypt"):
            vectors = [
                EncryptedVector.encrypt(
                    public_key,
                    g,
                    precision=RING_PRECISION,
                    max_abs=RING_MAX_ABS,
                    max_summands=count,
                )
                for g in gradients
            ]
        with cpu("packed sum"):
            encrypted_sum = EncryptedVector.sum(vectors)
        with cpu("packed decrypt"):
            total = encrypted_sum.decrypt(private_key)
        w_packed = w_packed - RING["eta"] * total / count

        plain = sum(mean_gradient(X, y, w_plain) for X, y in hospitals)
        w_plain = w_plain - RING["eta"] * plain / count
    return {
        "seconds": dict(cpu.seconds),
        "ciphertexts_ring": count * width,
        "ciphertexts_packed": len(vectors[0].ciphertexts) * count,
        "slots": vectors[0].layout.slots,
        "largest_gradient": largest,
        "diff_packed_ring": float(np.max(np.abs(w_packed - w_ring))),
        "diff_ring_plain": float(np.max(np.abs(w_ring - w_plain))),
        "diff_packed_plain": float(np.max(np.abs(w_packed - w_plain))),
        "mse_ring": float(np.mean((X_test @ w_ring - y_test) ** 2)),
        "mse_packed": float(np.mean((X_test @ w_packed - y_test) ** 2)),
        "largest_weight": float(np.max(np.abs(w_ring))),
        "rows": [len(y) for _, y in hospitals],
    }


def seconds(value: float) -> str:
    if value < 0.1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def gas_cell(values: list[int]) -> str:
    if not values:
        return "—"
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,} – {high:,}"


def sonar_tables(runs: dict[str, dict[str, Any]], config: dict[str, Any], mines: int) -> list[str]:
    names = list(runs)
    median = {
        name: {
            stage: statistics.median(r.get(stage, 0.0) for r in run["rounds"])
            for stage, _ in STAGES
        }
        for name, run in runs.items()
    }
    totals = {
        name: statistics.median(sum(r.values()) for r in runs[name]["rounds"]) for name in names
    }
    head = " | ".join(names)
    lines = [
        f"| stage | what | {head} |",
        "|---|---|" + "---:|" * len(names),
    ]
    for stage, what in STAGES:
        cells = " | ".join(
            f"{seconds(median[n][stage])} ({median[n][stage] / totals[n]:.0%})" for n in names
        )
        lines.append(f"| {stage} | {what} | {cells} |")
    cells = " | ".join(f"**{seconds(totals[n])}**" for n in names)
    lines.append(f"| **round** | median of {config['rounds']} round(s) | {cells} |")
    cells = " | ".join(seconds(runs[n]["post"]) for n in names)
    lines.append(f"| post the model | once: store the bundle, `post_model` | {cells} |")
    lines += ["", f"| call (gas used) | {head} |", "|---|" + "---:|" * len(names)]
    for call in CALLS:
        per = " | ".join(gas_cell(runs[n]["gas"][call]) for n in names)
        lines.append(f"| `{call}` | {per} |")
    per_round = " | ".join(
        f"{sum(sum(runs[n]['gas'][c]) for c in CALLS[1:]) / config['rounds']:,.0f}" for n in names
    )
    lines.append(f"| a round ({mines} submits, evaluate, pay), mean | {per_round} |")
    return lines


def ring_table(ring: dict[str, Any], iterations: int) -> list[str]:
    s = ring["seconds"]
    rows = []
    for label, a, b in (
        ("encrypt (hospitals)", "ring encrypt", "packed encrypt"),
        ("add (ring) / `EncryptedVector.sum`", "ring add", "packed sum"),
        ("decrypt (server)", "ring decrypt", "packed decrypt"),
    ):
        rows.append((label, seconds(s[a]), seconds(s[b]), f"{s[a] / s[b]:.1f}×"))
    ring_total = s["ring encrypt"] + s["ring add"] + s["ring decrypt"]
    packed_total = s["packed encrypt"] + s["packed sum"] + s["packed decrypt"]
    rows.append(
        (
            f"**{iterations} iterations, end to end**",
            f"**{seconds(ring_total)}**",
            f"**{seconds(packed_total)}**",
            f"**{ring_total / packed_total:.1f}×**",
        )
    )
    rows.append(
        (
            "ciphertexts per iteration",
            f"{ring['ciphertexts_ring']}",
            f"{ring['ciphertexts_packed']} ({ring['slots']} slots each)",
            "",
        )
    )
    rows.append(
        (
            "largest weight difference, packed vs ring",
            "",
            f"{ring['diff_packed_ring']:.1e}",
            "",
        )
    )
    rows.append(
        ("test MSE of the final model", f"{ring['mse_ring']:.2f}", f"{ring['mse_packed']:.2f}", "")
    )
    rows.append(
        (
            "largest weight difference from plaintext gradient descent",
            f"{ring['diff_ring_plain']:.1e}",
            f"{ring['diff_packed_plain']:.1e}",
            "",
        )
    )
    return [
        "| | phe ring (python-paillier's example) | om_teach packed | ring ÷ packed |",
        "|---|---:|---:|---:|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1024-bit keys, fewer rounds")
    config = QUICK if parser.parse_args(argv).quick else FULL
    settings = Settings(key_bits=config["key_bits"])
    load_before = os.getloadavg()
    compile_contract()
    runs = {"eth-tester": run_sonar(Chain.embedded(accounts=settings.mines + 1), config, settings)}
    try:
        find_anvil()
    except FileNotFoundError:
        anvil_note = "anvil was not run: `node_modules` has no anvil binary (run `npm install`)."
    else:
        anvil_note = ""
        with Chain.anvil(accounts=settings.mines + 1) as chain:
            runs["anvil"] = run_sonar(chain, config, settings)
    ring = run_ring(config["ring_iterations"])
    helium = run_helium(config, settings)
    load_after = os.getloadavg()
    if ring["diff_packed_ring"] > 1e-3:
        raise SystemExit(f"the packed and ring models differ by {ring['diff_packed_ring']:.3g}")
    mines = settings.mines
    load = f"{load_before[0]:.1f} before, {load_after[0]:.1f} after on {os.cpu_count()} cores"
    lines = [
        "## Sonar",
        "",
        f"**A round, stage by stage.** {mines} mines hold iid shares of the diabetes training "
        f"rows (`om_teach.data.load_diabetes`, seed {settings.seed}); the scientist holds a "
        f"{settings.key_bits}-bit Paillier key (Hydrogen) and its validation rows. Everything "
        "runs in this one process with a `DirectoryStore` in a temporary folder; each stage "
        "calls the library's own pieces (`round_model_cid`, `ModelBundle`, `gradient`, `clip`, "
        "`EncryptedVector.encrypt/sum/decrypt`, the `ModelRepository` client) with a "
        "wall-clock timer (`time.perf_counter`) around each, in the order a mine and the "
        "scientist call them: each mine reads the round and its model, trains, encrypts, stores "
        "and submits; the scientist reads the CIDs, fetches, sums, decrypts, steps, evaluates, "
        "stores, records (`evaluate_round`) and pays (`pay_round`). Mines run one after the "
        "other, not in parallel, so the round's time is the sum of every party's work, and no "
        "waiting is counted. Every run checks that its model equals plaintext federated "
        f"training (`train_federated`) to 1e-6 (largest difference: "
        + ", ".join(f"{n} {r['deviation']:.1e}" for n, r in runs.items())
        + f"). Times are the median of {config['rounds']} round(s), stage by stage (so the stages "
        "need not add up exactly to the round), after the key is generated and the model "
        "posted; gas is the range over every call. eth-tester is py-evm inside this process; "
        f"anvil is Foundry's node in its own process, reached over HTTP on 127.0.0.1. {anvil_note}",
        "",
        *sonar_tables(runs, config, mines),
        "",
        f"**python-paillier's federated example, side by side.** Its workload, re-implemented "
        f"here: scikit-learn's diabetes data with a constant column, shuffled with seed "
        f"{RING['seed']}, {RING['test_rows']} test rows, the rest cut into {RING['hospitals']} "
        f"contiguous shares ({', '.join(map(str, ring['rows']))} rows), a "
        f"{RING['key_bits']}-bit key, {config['ring_iterations']} iterations of gradient "
        f"descent with step {RING['eta']} on the mean of the hospitals' gradients. The phe ring: "
        "each hospital encrypts its gradient value by value (`public_key.encrypt`), adds it to "
        "the encrypted vector passed to it with `+`, and the server decrypts the total value by "
        "value. om_teach: each hospital encrypts its gradient as one packed `EncryptedVector` "
        f"(precision {RING_PRECISION:g} on the sum, `max_abs` {RING_MAX_ABS:g}; the largest "
        f"gradient value was {ring['largest_gradient']:.0f}), `EncryptedVector.sum` adds them, "
        "and the server decrypts once. Both use the same key, and one iteration of each runs "
        "in turn, so that both feel the same load; times are CPU seconds of this process "
        f"(`time.process_time`; key generation, {seconds(ring['seconds']['keygen'])}, "
        f"excluded). The two final models differ by at most {ring['diff_packed_ring']:.1e} "
        f"in any weight (the largest weight is {ring['largest_weight']:.0f}).",
        "",
        *ring_table(ring, config["ring_iterations"]),
        "",
        "**What Helium's defences cost.** Two Helium federations on eth-tester, each with its "
        f"capsule in this process ({settings.key_bits}-bit key, no noise), {mines} mines: in one "
        "every mine seals its ciphertext to the capsule's X25519 key with HPKE and signs it "
        "with its Ed25519 key, and the capsule settles the round on chain with its signature "
        "(`settle_round`); in the other the mines store bare ciphertexts, counted from any "
        "address (`sealed=False`, the defences off, still settled). One round of each runs in "
        "turn (`Federation.run_round`, wall-clock). Then one mine's contribution to the next "
        "round, piece by piece, against the Paillier encryption it wraps.",
        "",
        *helium_table(helium, config, mines),
        "",
        f"The machine was shared with other jobs (1-minute load average {load}): trust the "
        "ratios, measured side by side in this one run, more than the absolute times.",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
