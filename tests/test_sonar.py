"""om_teach.sonar: the model, the mines, the scientist and the platform, in one process and as
separate processes (anvil, a directory store, mine processes).

Keys are 1024 bits here (2048 in the demo): what is checked does not depend on the key size.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from om_teach.crypto.paillier import EncryptedVector, generate_keypair
from om_teach.sonar import mine as mine_module
from om_teach.sonar.cli import demo_main, down_main, format_table
from om_teach.sonar.contract import ContractRevert
from om_teach.sonar.model import (
    ModelBundle,
    gradient,
    mse,
    train_centralized,
    train_federated,
)
from om_teach.sonar.platform import (
    Platform,
    Settings,
    down,
    in_process,
    owner_rows,
    run_in_process,
)
from om_teach.sonar.scientist import RoundRecord
from om_teach.storage import DirectoryStore, MemoryStore, TamperedContentError

from .conftest import require_anvil

KEY_BITS = 1024
ROUNDS = 3
NO_CLIP = Settings(key_bits=KEY_BITS, clip_norm=100.0)
SMALL = Settings(mines=4, key_bits=KEY_BITS, clip_norm=100.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bundle(**changes) -> ModelBundle:
    fields = dict(
        weights=(0.5, -1.0),
        bias=0.25,
        public_key_n=2**61 - 1,
        precision=1e-6,
        max_abs=4.0,
        max_summands=3,
        clip_norm=4.0,
        learning_rate=0.1,
        round=2,
    )
    return ModelBundle(**{**fields, **changes})


def _not_recorded(federation, round: int) -> None:
    model_id = federation.scientist.model_id
    assert federation.repository.current_round(model_id) == round
    assert not federation.repository.round_result(model_id, round).evaluated
    assert federation.scientist.bundle.round == round


@pytest.fixture(scope="module")
def ten_mines() -> tuple[list[RoundRecord], object]:
    federation = in_process(NO_CLIP)
    return [federation.run_round() for _ in range(ROUNDS)], federation


@pytest.fixture
def federation():
    return in_process(SMALL)


def test_gradient_is_the_derivative_of_the_mse():
    """The gradient matches central finite differences of the MSE, weights and bias."""
    rng = np.random.default_rng(0)
    X, y, w, b = rng.normal(size=(20, 3)), rng.normal(size=20), rng.normal(size=3), 0.3
    g, h = gradient(X, y, w, b), 1e-6
    numeric = [(mse(X, y, w + h * e, b) - mse(X, y, w - h * e, b)) / (2 * h) for e in np.eye(3)] + [
        (mse(X, y, w, b + h) - mse(X, y, w, b - h)) / (2 * h)
    ]
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8)
    assert mse(X, y, w, b) == pytest.approx(np.mean((X @ w + b - y) ** 2))


def test_bundle_round_trips_as_canonical_json():
    """A bundle survives to_bytes/from_bytes, and its bytes are canonical (sorted, compact)."""
    bundle = _bundle()
    data = bundle.to_bytes()
    assert ModelBundle.from_bytes(data) == bundle
    raw = json.loads(data)
    assert data == json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    assert raw["format"] == "om-teach/sonar-model/1" and raw["public_key_n"] == str(2**61 - 1)
    stepped = bundle.stepped(np.array([1.0, 2.0, -4.0]))
    assert stepped.round == 3 and stepped.weights == pytest.approx((0.4, -1.2))
    assert stepped.bias == pytest.approx(0.65)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"format": "other/1"}, "unknown model format"),
        ({"weights": "0.5"}, "'weights' must be a list"),
        ({"weights": []}, "'weights' is empty"),
        ({"bias": None}, "'bias' must be a number"),
        ({"public_key_n": 12}, "decimal string"),
        ({"clip_norm": -1.0}, "'clip_norm' must be positive"),
        ({"round": -1}, "'round' must be at least 0"),
        ({"max_abs": 1.0}, "max_abs 1.0 is below clip_norm"),
        ({"extra": 1}, "unexpected ['extra']"),
    ],
)
def test_malformed_bundle_is_refused(edit, message):
    """Each malformed bundle field raises an error naming it."""
    raw = {**json.loads(_bundle().to_bytes()), **edit}
    with pytest.raises((ValueError, TypeError), match=message.replace("[", r"\[")):
        ModelBundle.from_bytes(json.dumps(raw).encode())


def test_wrong_shape_model_is_refused():
    """A model whose weights do not fit the rows is refused, naming both shapes."""
    with pytest.raises(ValueError, match=r"it has 2 weights .* the rows have 10 features"):
        _bundle().check_features(10)
    with pytest.raises(ValueError, match=r"shape \(2,\) does not fit .* expected shape \(3,\)"):
        _bundle().stepped(np.zeros(2))


def test_mine_refuses_a_posted_model_of_the_wrong_shape(federation):
    """A mine asked to train a 3-weight model on 10-feature rows refuses it and submits nothing."""
    scientist, repository = federation.scientist, federation.repository
    wrong = replace(scientist.bundle, weights=(0.0, 0.0, 0.0))
    model_id, _ = repository.post_model(
        federation.store.put(wrong.to_bytes()),
        bounty=10**18,
        initial_error=1.0,
        target_error=0.0,
        sender=scientist.account,
    )
    miner = federation.mines[0]
    miner.model_id = model_id
    with pytest.raises(ValueError, match=r"3 weights .* the rows have 10 features"):
        miner.step()
    assert repository.submitters(model_id, 0) == []


def test_in_process_equals_plaintext_aggregation_and_centralized(ten_mines):
    """Unclipped, noiseless: equal to plaintext aggregation to 1e-6, within 2% of centralized."""
    records, _ = ten_mines
    shards, split = owner_rows(NO_CLIP)
    for r in range(ROUNDS):
        w, b = train_federated(shards, steps=r + 1, learning_rate=0.1, clip_norm=100.0)
        assert records[r].mse == pytest.approx(mse(split.X_val, split.y_val, w, b), abs=1e-6)
        X, y = np.concatenate([s[0] for s in shards]), np.concatenate([s[1] for s in shards])
        wc, bc = train_centralized(X, y, steps=r + 1, learning_rate=0.1)
        assert records[r].mse == pytest.approx(mse(split.X_val, split.y_val, wc, bc), rel=0.02)
    w0 = np.zeros(10)
    assert max(np.linalg.norm(gradient(X, y, w0, 0.0)) for X, y in shards) < 100.0 / 2
    assert [r.mse for r in records] == sorted([r.mse for r in records], reverse=True)


def test_rounds_are_recorded_and_paid(ten_mines):
    """Every round is on chain with its model CID and error, and its 10 mines are paid equally."""
    records, federation = ten_mines
    repository, model_id = federation.repository, federation.scientist.model_id
    assert repository.current_round(model_id) == ROUNDS
    mines = {m.account for m in federation.mines}
    for record in records:
        result = repository.round_result(model_id, record.round)
        assert result.evaluated and result.paid and result.cid == record.model_cid
        assert result.error == pytest.approx(record.mse, abs=1e-6)
        assert set(record.contributors) == mines == set(record.payouts_eth)
        assert len(set(record.payouts_eth.values())) == 1 and record.epsilon is None
        assert record.gas["evaluate_round"] > 0 and record.gas["pay_round"] > 0
    bundle = ModelBundle.from_bytes(federation.store.get(records[-1].model_cid))
    assert bundle.round == ROUNDS and mse(
        federation.scientist.X_val,
        federation.scientist.y_val,
        np.array(bundle.weights),
        bundle.bias,
    ) == pytest.approx(records[-1].mse)


def test_clipping_matches_plaintext_aggregation():
    """With a clip norm that binds, the encrypted rounds still equal clipped plaintext rounds."""
    settings = replace(SMALL, clip_norm=0.5)
    federation = in_process(settings)
    records = [federation.run_round() for _ in range(2)]
    shards, split = owner_rows(settings)
    assert min(np.linalg.norm(gradient(X, y, np.zeros(10), 0.0)) for X, y in shards) > 0.5
    w, b = train_federated(shards, steps=2, learning_rate=0.1, clip_norm=0.5)
    assert records[-1].mse == pytest.approx(mse(split.X_val, split.y_val, w, b), abs=1e-6)


class _BrokenStore(MemoryStore):
    def put(self, data: bytes) -> str:
        raise OSError("disk gone")


def test_a_crashed_mine_costs_its_round_only_its_gradient(federation):
    """A mine failing mid-round is waited for until the deadline; the round goes on without it."""
    crashing = federation.mines[1]
    store = crashing.store
    federation.run_round(timeout=0.2)
    crashing.store = _BrokenStore()
    record = federation.run_round(timeout=0.2)
    crashing.store = store
    after = federation.run_round(timeout=0.2)
    assert len(record.contributors) == 3 and crashing.account not in record.contributors
    assert record.seconds["wait"] >= 0.2 and len(after.contributors) == 4
    assert [(r, a) for r, a, _ in federation.failures] == [(1, crashing.account)]
    shards, split = owner_rows(SMALL)
    w, b = np.zeros(10), 0.0
    for round_shards in (shards, shards[:1] + shards[2:], shards):
        w, b = train_federated(
            round_shards, steps=1, learning_rate=0.1, clip_norm=100.0, weights=w, bias=b
        )
    assert after.mse == pytest.approx(mse(split.X_val, split.y_val, w, b), abs=1e-6)


def test_a_round_without_submissions_times_out_unrecorded(federation):
    """A round in which no mine submits raises TimeoutError at its deadline and records nothing."""
    with pytest.raises(TimeoutError, match=r"no mine submitted .* round 0 .* within 0\.1 s"):
        federation.scientist.run_round(timeout=0.1)
    _not_recorded(federation, 0)


def _step_all(federation) -> None:
    for miner in federation.mines:
        miner.step()


@pytest.mark.parametrize("kind", ["memory", "directory"])
def test_tampered_gradient_is_refused(kind, tmp_path):
    """An edited stored gradient raises TamperedContentError naming its CID; nothing recorded."""
    store = MemoryStore() if kind == "memory" else DirectoryStore(tmp_path)
    federation = in_process(SMALL, store=store)
    _step_all(federation)
    cid = federation.mines[2].submitted[0]
    data = json.loads(store.get(cid))
    data["ciphertexts"][0] = str(int(data["ciphertexts"][0]) + 1)
    if kind == "memory":
        store._blocks[cid] = json.dumps(data).encode()
    else:
        store.path(cid).write_text(json.dumps(data))
    with pytest.raises(TamperedContentError, match=cid) as caught:
        federation.scientist.run_round(timeout=0.1)
    assert caught.value.cid == cid
    _not_recorded(federation, 0)


def test_malformed_cid_is_refused(federation):
    """A submission whose on-chain CID the store cannot serve raises ValueError naming it."""
    bad = "b" + "a" * 58
    sender = federation.mines[0].account
    federation.repository.submit_gradient(federation.scientist.model_id, 0, bad, sender=sender)
    _step_all(federation)
    with pytest.raises(ValueError, match=f"'{bad}' submitted by {sender} is not a CID"):
        federation.scientist.run_round(timeout=0.1)
    _not_recorded(federation, 0)


def test_malformed_model_cid_is_refused(federation):
    """A model posted under a CID the store cannot serve makes the mine refuse, naming it."""
    bad = "b" + "c" * 58
    repository, scientist = federation.repository, federation.scientist
    model_id, _ = repository.post_model(
        bad, bounty=10**18, initial_error=1.0, target_error=0.0, sender=scientist.account
    )
    miner = federation.mines[0]
    miner.model_id = model_id
    with pytest.raises(ValueError, match=f"'{bad}' is not a CIDv0"):
        miner.step()
    assert repository.submitters(model_id, 0) == []


def test_ciphertext_under_another_key_is_refused(federation):
    """A mine that encrypts under another key makes the sum refuse, naming its gradient."""
    other, _ = generate_keypair(KEY_BITS)
    rogue = federation.mines[3]
    bundle = rogue.fetch_model(0)
    vector = EncryptedVector.encrypt(
        other, np.zeros(11), max_abs=bundle.max_abs, max_summands=bundle.max_summands
    )
    cid = federation.store.put(json.dumps(vector.to_dict()).encode())
    federation.repository.submit_gradient(
        federation.scientist.model_id, 0, cid, sender=rogue.account
    )
    _step_all(federation)
    with pytest.raises(ValueError, match=f"{cid}' submitted by .* under a different public key"):
        federation.scientist.run_round(timeout=0.1)
    _not_recorded(federation, 0)


def test_only_the_owner_evaluates_and_pays(federation):
    """A mine cannot record or pay a round: the contract reverts, naming the rule."""
    _step_all(federation)
    miner, model_id = federation.mines[0], federation.scientist.model_id
    cid = federation.mines[1].submitted[0]
    with pytest.raises(ContractRevert, match="only the model's owner may evaluate"):
        federation.repository.evaluate_round(model_id, 0, cid, 0.1, sender=miner.account)
    _not_recorded(federation, 0)
    federation.scientist.run_round(timeout=0.1)
    with pytest.raises(ContractRevert, match="round already paid"):
        federation.repository.pay_round(model_id, 0, sender=federation.scientist.account)
    with pytest.raises(ContractRevert, match="only the model's owner may pay"):
        federation.repository.pay_round(model_id, 0, sender=miner.account)


def test_unreachable_rpc_and_ipfs_are_named(tmp_path, capsys):
    """A mine pointed at a dead RPC URL or IPFS API exits with 2, naming the address."""
    rows = tmp_path / "rows.npz"
    np.savez(rows, X=np.zeros((2, 3)), y=np.zeros(2))
    port = _free_port()
    common = ["--contract", "0x" + "1" * 40, "--model-id", "0", "--account-index", "1"]
    rpc = f"http://127.0.0.1:{port}"
    argv = [*common, "--rows", str(rows), "--rpc-url", rpc, "--store", str(tmp_path / "s")]
    assert mine_module.main(argv) == 2
    assert f"no Ethereum JSON-RPC node answers at {rpc}" in capsys.readouterr().err
    api = f"/ip4/127.0.0.1/tcp/{port}/http"
    assert mine_module.main([*argv[:-2], "--ipfs-api", api]) == 2
    assert api in capsys.readouterr().err
    with pytest.raises(ConnectionError, match=rpc):
        Platform(tmp_path / "run", SMALL, rpc_url=rpc).up()
    assert demo_main(["--rpc-url", rpc, "--run-dir", str(tmp_path / "demo")]) == 1
    assert f"ConnectionError: no Ethereum JSON-RPC node answers at {rpc}" in capsys.readouterr().err


def test_mine_process_is_light():
    """Importing the mine loads neither torch, opacus, pandas, scikit-learn nor vyper."""
    code = (
        "import sys, om_teach.sonar.mine\n"
        "heavy = {'torch', 'opacus', 'pandas', 'sklearn', 'vyper'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_table_has_a_row_per_round(ten_mines):
    """The CLI table shows each round's MSE, mines, ε, total payout and gas."""
    records, _ = ten_mines
    table = format_table(records).splitlines()
    assert len(table) == 2 + ROUNDS and "val MSE" in table[0]
    assert f"{records[1].mse:.5f}" in table[3] and str(records[1].gas["pay_round"]) in table[3]


def test_down_without_a_platform_says_so(tmp_path, capsys):
    """``om-teach sonar down`` on a folder with no platform fails, naming the folder."""
    assert down_main(["--run-dir", str(tmp_path)]) == 1
    assert str(tmp_path) in capsys.readouterr().err


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = f"/proc/{pid}/status"
    return not (os.path.exists(status) and "zombie" in open(status).read())


def test_separate_processes_equal_the_in_process_run(tmp_path):
    """Anvil, a folder store and 3 mine processes equal the in-process run; down() ends them all."""
    require_anvil()
    settings = replace(SMALL, mines=3)
    platform = Platform(tmp_path, settings)
    try:
        platform.up()
        anvil = platform.node.pid
        pids = [p.pid for _, p in platform.processes] + [anvil]
        records = platform.demo(2, timeout=30.0, progress=False)
        stopped = down(tmp_path)
    finally:
        platform.down()
    assert anvil in stopped and set(stopped) <= set(pids)
    assert not [pid for pid in pids if _running(pid)]
    assert not (tmp_path / "state.json").exists()
    expected = in_process(settings)
    for record in records:
        reference = expected.run_round()
        assert record.mse == pytest.approx(reference.mse, abs=1e-9)
        assert len(record.contributors) == 3
        assert sum(record.payouts_eth.values()) == pytest.approx(
            sum(reference.payouts_eth.values())
        )


@pytest.mark.parametrize("noise_multiplier", [0.0, 1.0])
def test_helium_in_process(noise_multiplier):
    """Helium in one process: noise off equals plaintext aggregation; noise on spends ε."""
    records = run_in_process(2, SMALL, helium=True, noise_multiplier=noise_multiplier)
    shards, split = owner_rows(SMALL)
    w, b = train_federated(shards, steps=2, learning_rate=0.1, clip_norm=100.0)
    noiseless = mse(split.X_val, split.y_val, w, b)
    if noise_multiplier == 0:
        assert records[-1].mse == pytest.approx(noiseless, abs=1e-6)
        assert all(math.isinf(r.epsilon) for r in records)
    else:
        assert abs(records[-1].mse - noiseless) > 1e-3
        assert 0 < records[0].epsilon < records[1].epsilon <= 10.0


def test_helium_noise_is_seeded_only_insecurely():
    """``insecure_seed`` repeats the noisy rounds and reports ε as ∞ (the scientist could
    know the noise); without it the noise differs from run to run and ε is finite."""

    def run(**options) -> list:
        federation = in_process(SMALL, helium=True, noise_multiplier=1.0, **options)
        return [federation.run_round() for _ in range(1)]

    first = run(insecure_seed=7)
    assert [r.mse for r in run(insecure_seed=7)] == [r.mse for r in first]
    assert all(math.isinf(r.epsilon) for r in first)
    unseeded = run()
    assert [r.mse for r in unseeded] != [r.mse for r in run()]
    assert all(math.isfinite(r.epsilon) for r in unseeded)


def test_mine_loads_its_iid_share(tmp_path):
    """``--rows-seed/--owners`` gives mine i the same rows as the platform's i-th share."""
    parser = mine_module._parser()
    common = ["--rpc-url", "http://127.0.0.1:1", "--contract", "0x0", "--model-id", "0"]
    common += ["--store", str(tmp_path)]
    shards, _ = owner_rows(SMALL)
    for index in (1, 4):
        args = parser.parse_args(
            [*common, "--account-index", str(index), "--rows-seed", "0", "--owners", "4"]
        )
        X, y = mine_module.load_rows(args)
        np.testing.assert_array_equal(X, shards[index - 1][0])
        np.testing.assert_array_equal(y, shards[index - 1][1])
    args = parser.parse_args([*common, "--account-index", "5", "--rows-seed", "0", "--owners", "4"])
    with pytest.raises(ValueError, match="owner 4 is not one of the 4 owners"):
        mine_module.load_rows(args)


def test_hydrogen_decrypts_only_the_sum(federation, monkeypatch):
    """The scientist's key decrypts one vector a round: the sum of all four gradients."""
    counts = []
    decrypt = EncryptedVector.decrypt

    def recording(vector, private_key):
        counts.append(vector.count)
        return decrypt(vector, private_key)

    monkeypatch.setattr(EncryptedVector, "decrypt", recording)
    federation.run_round()
    federation.run_round()
    assert counts == [4, 4]
