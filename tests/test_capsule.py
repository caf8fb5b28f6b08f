"""om_teach.sonar.capsule, capsule_http and capsule_cli: the Helium key holder, its refusals, its
exclusions, its HTTP API, its commands.

Small fake mines seal and sign Paillier-encrypted gradients and submit them through the real
contract on eth-tester, into a memory store, as the design's formats say; the capsule must
release the round's sum of admitted, valid contributions, and nothing else.
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import replace

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from om_teach.crypto.paillier import EncryptedVector, generate_keypair
from om_teach.privacy.accounting import epsilon
from om_teach.privacy.updates import clip
from om_teach.sonar.capsule import Capsule, CapsuleRefusal
from om_teach.sonar.capsule_cli import main
from om_teach.sonar.capsule_http import NO_CIPHERTEXTS, CapsuleClient, CapsuleServer
from om_teach.sonar.capsule_state import CapsuleState, StateMismatch
from om_teach.sonar.chain import Chain
from om_teach.sonar.contract import ModelRepository
from om_teach.sonar.contribution import _SIGNED, FORMAT, SUITE, Context, _b64, seal, verify_key_hex
from om_teach.sonar.model import canonical_json
from om_teach.sonar.record import KeyRecord, PinMismatch, fetch_record
from om_teach.storage import DirectoryStore, MemoryStore

from .conftest import require_anvil

KEY_BITS = 1024
CLIP = 1.0
MINES = 5
ETHER = 10**18


@pytest.fixture(scope="module")
def chain():
    return Chain.embedded(accounts=MINES + 3)


@pytest.fixture(scope="module")
def repo(chain):
    return ModelRepository.deploy(chain)


@pytest.fixture(scope="module")
def foreign_key():
    return generate_keypair(KEY_BITS)


@pytest.fixture(scope="module")
def mine_keys():
    """Each fake mine's signing key, by its index (account ``1 + index``)."""
    return [Ed25519PrivateKey.generate() for _ in range(MINES + 1)]


@pytest.fixture
def store():
    return MemoryStore()


def make_capsule(repo, store, tmp_path, mine_keys, *, admit=MINES, **settings) -> Capsule:
    """A capsule in ``tmp_path`` with the first ``admit`` fake mines admitted."""
    settings = {"min_contributors": 3, "noise_multiplier": 0.0, "budget": 10.0, **settings}
    capsule = Capsule.create(repo, store, tmp_path / "capsule", key_bits=KEY_BITS, **settings)
    for mine in range(admit):
        capsule.admit(repo.chain.accounts[1 + mine], verify_key_hex(mine_keys[mine]))
    return capsule


def bundle_bytes(features: int, round: int, *, n=None, max_summands: int = MINES) -> bytes:
    """A model bundle in the design's format (canonical JSON); Helium names no key."""
    return canonical_json(
        {
            "format": "om-teach/sonar-model/1",
            "weights": [0.0] * features,
            "bias": 0.0,
            "public_key_n": None if n is None else str(n),
            "precision": 1e-6,
            "max_abs": CLIP,
            "max_summands": max_summands,
            "clip_norm": CLIP,
            "learning_rate": 0.1,
            "round": round,
        }
    )


def post(repo, store, capsule, *, features: int = 10, n=None, record=None) -> int:
    """The scientist posts a model bound to ``record`` (the capsule's by default)."""
    record = record or capsule.record
    model_id, _ = repo.post_model(
        store.put(bundle_bytes(features, 0, n=n)),
        bounty=ETHER,
        initial_error=1.0,
        target_error=0.1,
        sender=repo.chain.accounts[0],
        capsule=record.signer,
        capsule_record=record.fingerprint,
    )
    return model_id


def close(repo, store, release, model_id: int, round: int, *, features: int = 10) -> None:
    """The scientist settles round ``round`` with the capsule's settlement and records the
    next model, opening round ``round + 1``."""
    settlement = release.settlement
    repo.settle_round(
        model_id,
        round,
        considered=settlement.content["considered"],
        summed=settlement.summed,
        settlement=settlement.digest,
        signature=settlement.signature,
        sender=repo.chain.accounts[0],
    )
    cid = store.put(bundle_bytes(features, round + 1))
    repo.evaluate_round(model_id, round, cid, 0.5, sender=repo.chain.accounts[0])


def contribution(capsule, repo, model_id, round, mine, values, *, signer=None, **vector) -> bytes:
    """Mine ``mine``'s gradient: clipped, encrypted under the capsule's key, sealed to it under
    the round's context, and signed by the mine's key (or ``signer``)."""
    options = {"max_abs": CLIP, "max_summands": MINES, **vector}
    encrypted = EncryptedVector.encrypt(capsule.public_key, values, **options)
    context = Context(
        chain_id=repo.chain.web3.eth.chain_id,
        contract=repo.address,
        model_id=model_id,
        round=round,
        mine=repo.chain.accounts[1 + mine],
    )
    return seal(
        encrypted, context, sealing_key=capsule.record.sealing_public_key, signing_key=signer
    )


def submit(repo, store, model_id, round, mine, data: bytes) -> str:
    cid = store.put(data)
    repo.submit_gradient(model_id, round, cid, sender=repo.chain.accounts[1 + mine])
    return cid


def gradients(count: int, length: int = 11, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [clip(rng.normal(0, 1.0, size=length), clip_norm=CLIP) for _ in range(count)]


def run_round(repo, store, capsule, mine_keys, count: int, *, model_id=None, round: int = 0):
    """Post a model (unless given) and have ``count`` mines submit; the clipped gradients."""
    model_id = post(repo, store, capsule) if model_id is None else model_id
    values = gradients(count, seed=round)
    for mine, g in enumerate(values):
        data = contribution(capsule, repo, model_id, round, mine, g, signer=mine_keys[mine])
        submit(repo, store, model_id, round, mine, data)
    return model_id, values


def new_state(folder, repo) -> CapsuleState:
    return CapsuleState.create(
        folder, chain_id=1, contract=repo.address, key_bits=KEY_BITS, min_contributors=3,
        noise_multiplier=0.0, budget=1.0, delta=1e-5,
    )  # fmt: skip


def refusal(call, *args) -> CapsuleRefusal:
    with pytest.raises(CapsuleRefusal) as caught:
        call(*args)
    return caught.value


@pytest.fixture
def capsule(repo, store, tmp_path, mine_keys):
    return make_capsule(repo, store, tmp_path, mine_keys)


def test_aggregate_is_the_sum_of_clipped_gradients(repo, store, capsule, mine_keys):
    """Without noise the release is the exact sum of the clipped gradients, with a settlement
    the contract accepts; only the summed mines are paid."""
    model_id, values = run_round(repo, store, capsule, mine_keys, 4)
    result = capsule.aggregate(model_id, 0)
    np.testing.assert_allclose(result.sum, np.sum(values, axis=0), atol=1e-6)
    assert result.contributors == 4
    assert result.epsilon_spent == result.epsilon_total == float("inf")
    assert capsule.decrypted_rounds == [(model_id, 0)]
    assert result.settlement.summed == repo.submitters(model_id, 0)
    assert result.settlement.excluded == []
    close(repo, store, result, model_id, 0)
    assert repo.payees(model_id, 0) == repo.submitters(model_id, 0)


def test_noise_has_std_z_c_and_epsilon_matches_the_accountant(repo, store, tmp_path, mine_keys):
    """With z > 0 the noise has std z·C, and ε after two rounds is the accountant's ε."""
    z, features = 0.5, 1999
    capsule = make_capsule(repo, store, tmp_path, mine_keys, noise_multiplier=z, budget=50.0)
    model_id = post(repo, store, capsule, features=features)
    spent = []
    for round in range(2):
        exact = gradients(3, length=features + 1, seed=round)
        for mine, g in enumerate(exact):
            data = contribution(capsule, repo, model_id, round, mine, g, signer=mine_keys[mine])
            submit(repo, store, model_id, round, mine, data)
        result = capsule.aggregate(model_id, round)
        noise = result.sum - np.sum(exact, axis=0)
        assert abs(noise.mean()) < 0.05
        assert noise.std() == pytest.approx(z * CLIP, rel=0.08)
        spent.append(result.epsilon_spent)
        close(repo, store, result, model_id, round, features=features)
    for steps, eps in enumerate(spent, start=1):
        expected = epsilon(noise_multiplier=z, sample_rate=1.0, steps=steps, delta=1e-5)
        assert eps == pytest.approx(expected, rel=1e-9)
    assert capsule.epsilon_spent == spent[-1] and result.epsilon_total == 50.0


def test_refuses_fewer_than_k_contributions(repo, store, capsule, mine_keys):
    """Two contributions under k = 3 are refused (403) and nothing is recorded; a third one
    makes the round releasable."""
    model_id, _ = run_round(repo, store, capsule, mine_keys, 2)
    refused = refusal(capsule.aggregate, model_id, 0)
    assert refused.status == 403 and "has 2 valid contribution(s)" in str(refused)
    assert capsule.decrypted_rounds == []
    data = contribution(capsule, repo, model_id, 0, 2, gradients(1)[0], signer=mine_keys[2])
    submit(repo, store, model_id, 0, 2, data)
    assert capsule.aggregate(model_id, 0).contributors == 3


def test_refuses_a_second_release_of_a_round(repo, store, capsule, mine_keys):
    """A round is released once: asking again is 409."""
    model_id, _ = run_round(repo, store, capsule, mine_keys, 3)
    capsule.aggregate(model_id, 0)
    refused = refusal(capsule.aggregate, model_id, 0)
    assert refused.status == 409 and "already released" in str(refused)


def test_refuses_over_budget_before_decrypting(repo, store, tmp_path, mine_keys, monkeypatch):
    """A release the budget cannot afford is 403, spends nothing, and decrypts nothing."""
    decryptions = []
    original = EncryptedVector.decrypt
    monkeypatch.setattr(
        EncryptedVector, "decrypt", lambda self, key: decryptions.append(1) or original(self, key)
    )
    one_round = epsilon(noise_multiplier=1.0, sample_rate=1.0, steps=1, delta=1e-5)
    capsule = make_capsule(
        repo, store, tmp_path, mine_keys, noise_multiplier=1.0, budget=one_round / 2
    )
    model_id, _ = run_round(repo, store, capsule, mine_keys, 3)
    refused = refusal(capsule.aggregate, model_id, 0)
    assert refused.status == 403 and "over the budget" in str(refused)
    assert capsule.budget.spent == 0 and capsule.budget.history == []
    assert decryptions == [] and capsule.decrypted_rounds == []


def excluded(result) -> dict[str, tuple[str, str]]:
    return {e["mine"]: (e["reason"], e["detail"]) for e in result.settlement.excluded}


def bad_contribution(kind, capsule, repo, model_id, keys, foreign_key) -> tuple[int, bytes]:
    """A contribution of the given kind of wrong, and the fake mine that submits it."""
    accounts, chain_id = repo.chain.accounts, repo.chain.web3.eth.chain_id
    values = gradients(1, seed=99)[0]
    own = Context(chain_id, repo.address, model_id, 0, accounts[4])
    sealing = capsule.record.sealing_public_key
    vector = EncryptedVector.encrypt(capsule.public_key, values, max_abs=CLIP, max_summands=MINES)
    if kind == "foreign-signed":
        return 3, contribution(capsule, repo, model_id, 0, 3, values, signer=keys[0])
    if kind == "unsigned":
        data = json.loads(contribution(capsule, repo, model_id, 0, 3, values, signer=keys[3]))
        return 3, canonical_json({**data, "signature": ""})
    if kind == "sealed under another context":  # an old box, signed afresh for this round
        box = SUITE.encrypt(
            canonical_json(vector.to_dict()), sealing, info=replace(own, round=1).to_bytes()
        )
        signature = keys[3].sign(_SIGNED + own.to_bytes() + box)
        raw = {"format": FORMAT, "sealed": box, "signature": signature}
        return 3, canonical_json({k: v if isinstance(v, str) else _b64(v) for k, v in raw.items()})
    if kind == "sealed to another key":
        other = X25519PrivateKey.generate().public_key()
        return 3, seal(vector, own, sealing_key=other, signing_key=keys[3])
    if kind == "under another Paillier key":
        vector = EncryptedVector.encrypt(foreign_key[0], values, max_abs=CLIP, max_summands=MINES)
        return 3, seal(vector, own, sealing_key=sealing, signing_key=keys[3])
    if kind == "wrong length":
        return 3, contribution(capsule, repo, model_id, 0, 3, np.zeros(12), signer=keys[3])
    if kind == "wrong layout":
        return 3, contribution(
            capsule, repo, model_id, 0, 3, values, signer=keys[3], max_summands=MINES + 1
        )
    if kind == "not admitted":
        return 5, contribution(capsule, repo, model_id, 0, 5, values, signer=keys[5])
    assert kind == "bare ciphertext"
    return 3, canonical_json(vector.to_dict())


@pytest.mark.parametrize(
    ("kind", "reason", "detail"),
    [
        ("foreign-signed", "invalid", "signature is not the admitted key's"),
        ("unsigned", "invalid", "signature is not the admitted key's"),
        ("sealed under another context", "invalid", "does not open"),
        ("sealed to another key", "invalid", "does not open"),
        ("under another Paillier key", "invalid", "different public key"),
        ("wrong length", "invalid", "the model needs 11"),
        ("wrong layout", "invalid", "layout"),
        ("not admitted", "not admitted", "no admitted signing key"),
        ("bare ciphertext", "invalid", "not a sealed contribution"),
    ],
)
def test_a_bad_contribution_is_excluded_not_blocking(
    kind, reason, detail, repo, store, capsule, mine_keys, foreign_key
):
    """Each kind of bad contribution is excluded with its reason; the round is released with
    the others, and only they are paid."""
    model_id, values = run_round(repo, store, capsule, mine_keys, 3)
    mine, data = bad_contribution(kind, capsule, repo, model_id, mine_keys, foreign_key)
    submit(repo, store, model_id, 0, mine, data)
    result = capsule.aggregate(model_id, 0)
    np.testing.assert_allclose(result.sum, np.sum(values, axis=0), atol=1e-6)
    [entry] = result.settlement.excluded
    assert entry["mine"] == repo.chain.accounts[1 + mine] and entry["reason"] == reason
    assert detail in entry["detail"]
    close(repo, store, result, model_id, 0)
    assert repo.payees(model_id, 0) == repo.chain.accounts[1:4]


def test_settings_are_checked(repo, store, tmp_path):
    """A threshold below 1, a negative noise multiplier or no budget for noise is refused
    before any key is made."""
    for settings, problem in [
        ({"min_contributors": 0}, "min_contributors"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"budget": 0.0}, "budget"),
    ]:
        with pytest.raises(ValueError, match=problem):
            Capsule.create(repo, store, tmp_path / "c", key_bits=KEY_BITS, **settings)
    assert not (tmp_path / "c").exists()


def test_refuses_models_of_another_capsule_and_rounds_not_open(
    repo, store, capsule, mine_keys, tmp_path, foreign_key
):
    """A model bound to another capsule (or none), a bundle naming another key, an unknown
    model and a round not open are refused, naming the model."""
    other = make_capsule(repo, store, tmp_path / "other", mine_keys)
    model_id = post(repo, store, capsule, record=other.record)
    refused = refusal(capsule.aggregate, model_id, 0)
    assert refused.status == 403 and f"model {model_id} is bound on chain to capsule" in str(
        refused
    )
    model_id = post(repo, store, capsule, n=foreign_key[0].n)
    assert "names a Paillier key that is not the capsule's" in str(
        refusal(capsule.aggregate, model_id, 0)
    )
    model_id, _ = run_round(repo, store, capsule, mine_keys, 3)
    assert refusal(capsule.aggregate, 10**6, 0).status == 404
    assert refusal(capsule.aggregate, model_id, 1).status == 404
    assert refusal(capsule.aggregate, model_id, -1).status == 400
    assert capsule.decrypted_rounds == []


def test_state_is_private_durable_and_bound_to_its_capsule(repo, store, tmp_path, mine_keys):
    """The database is 0600 in a 0700 folder; reopened, it restores the keys, the admitted
    mines, the releases and ε; another capsule's, chain's or contract's database is refused."""
    capsule = make_capsule(repo, store, tmp_path, mine_keys, noise_multiplier=1.0, budget=20.0)
    model_id, _ = run_round(repo, store, capsule, mine_keys, 3)
    spent = capsule.aggregate(model_id, 0).epsilon_spent
    folder = tmp_path / "capsule"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "capsule.sqlite").stat().st_mode) == 0o600
    state = CapsuleState.open(folder, fingerprint=capsule.fingerprint)
    again = Capsule(repo, store, state)
    assert again.public_key == capsule.public_key and again.admitted == capsule.admitted
    assert again.epsilon_spent == pytest.approx(spent)
    assert refusal(again.aggregate, model_id, 0).status == 409
    with pytest.raises(StateMismatch, match="belongs to another capsule: its fingerprint"):
        CapsuleState.open(folder, fingerprint="ab" * 32)
    with pytest.raises(StateMismatch, match="serves contract"):
        CapsuleState.open(folder, contract="0x" + "11" * 20)
    with pytest.raises(ValueError, match="serves contract"):
        Capsule(ModelRepository.deploy(repo.chain), store, state)
    with pytest.raises(FileExistsError):
        new_state(folder, repo)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "capsule.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(StateMismatch, match="not a capsule database"):
        CapsuleState.open(tmp_path / "junk")


def test_a_release_is_committed_before_the_sum_leaves(repo, store, capsule, mine_keys, monkeypatch):
    """A capsule that dies after recording a release (before replying) has spent the round:
    reopened, it refuses to release it again."""
    model_id, _ = run_round(repo, store, capsule, mine_keys, 3)

    class Died(BaseException):
        pass

    def die(*args, **kwargs):
        raise Died

    monkeypatch.setattr("om_teach.sonar.capsule.Aggregate", die)
    with pytest.raises(Died):
        capsule.aggregate(model_id, 0)
    reopened = Capsule(repo, store, CapsuleState.open(capsule.state.path.parent))
    assert refusal(reopened.aggregate, model_id, 0).status == 409


def test_a_ciphertext_opened_before_is_a_duplicate(repo, store, capsule, mine_keys):
    """The same ciphertext, resealed by its own mine for a later round, is excluded as a
    duplicate: the capsule remembers every ciphertext it opened."""
    model_id, values = run_round(repo, store, capsule, mine_keys, 3)
    first = capsule.aggregate(model_id, 0)
    close(repo, store, first, model_id, 0)
    box = json.loads(store.get(repo.gradient_cids(model_id, 0)[0]))
    opened = SUITE.decrypt(
        base64.b64decode(box["sealed"]),
        capsule.state.sealing_key,
        info=Context(repo.chain.web3.eth.chain_id, repo.address, model_id, 0,
                     repo.chain.accounts[1]).to_bytes(),
    )  # fmt: skip
    vector = EncryptedVector.from_dict(json.loads(opened))
    context = Context(
        repo.chain.web3.eth.chain_id, repo.address, model_id, 1, repo.chain.accounts[1]
    )
    replayed = seal(vector, context, sealing_key=capsule.record.sealing_public_key,
                    signing_key=mine_keys[0])  # fmt: skip
    submit(repo, store, model_id, 1, 0, replayed)
    for mine in (1, 2, 3):
        data = contribution(capsule, repo, model_id, 1, mine, values[0], signer=mine_keys[mine])
        submit(repo, store, model_id, 1, mine, data)
    result = capsule.aggregate(model_id, 1)
    assert excluded(result)[repo.chain.accounts[1]][0] == "duplicate"
    assert result.contributors == 3


@pytest.fixture
def served(capsule):
    """A capsule serving HTTP from a thread of this process, and a client for it."""
    server = CapsuleServer(capsule)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield capsule, CapsuleClient(server.url)
    server.shutdown()
    server.server_close()


def post_json(url: str, payload: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_http_round_trip(served, repo, store, mine_keys):
    """Over HTTP: the key record (pinned by its fingerprint), the round's sum, its summed
    mines and settlement, ε, then 409 for a second call."""
    capsule, client = served
    assert client.record(capsule.fingerprint) == capsule.record
    model_id, values = run_round(repo, store, capsule, mine_keys, 3)
    result = client.aggregate(model_id, 0)
    np.testing.assert_allclose(result.sum, np.sum(values, axis=0), atol=1e-6)
    assert result.contributors == tuple(repo.submitters(model_id, 0))
    assert client.last_epsilon_spent == float("inf")
    close(repo, store, result, model_id, 0)
    refused = refusal(client.aggregate, model_id, 0)
    assert refused.status == 409 and "already released" in str(refused)
    assert client.status()["decrypted_rounds"] == [[model_id, 0]]


def test_http_refuses_ciphertexts_handed_to_it(served, repo, store, mine_keys):
    """A POST carrying a ciphertext, to any route, is 400; no route returns a private key."""
    capsule, client = served
    model_id, _ = run_round(repo, store, capsule, mine_keys, 3)
    sealed = json.loads(store.get(repo.gradient_cids(model_id, 0)[0]))
    for path, body in [
        ("/decrypt", sealed),
        ("/decrypt", {"ciphertext": "12345"}),
        (f"/models/{model_id}/rounds/0/aggregate", {"ciphertexts": ["1"]}),
        (f"/models/{model_id}/rounds/0/aggregate", sealed),
    ]:
        assert post_json(client.url + path, body) == (400, {"error": NO_CIPHERTEXTS})
    assert capsule.decrypted_rounds == []
    for path in ("/private-key", "/key", "/"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(client.url + path, timeout=10)
        assert caught.value.code == 404
    text = json.dumps(client.status()) + client.record().to_bytes().decode()
    private = capsule.state.paillier_private_key
    assert str(private.p) not in text and str(private.q) not in text


def test_a_mine_pins_the_record_by_fingerprint(served, repo, store):
    """The record is taken only when it hashes to the pinned fingerprint: a wrong fingerprint,
    a tampered record and an unreachable capsule are each refused, naming the problem."""
    capsule, client = served
    assert fetch_record(client.url, capsule.fingerprint) == capsule.record
    with pytest.raises(PinMismatch, match="not the pinned"):
        fetch_record(client.url, "0" * 64)
    tampered = replace(capsule.record, min_contributors=1).to_bytes()
    with pytest.raises(PinMismatch, match="not the pinned"):
        KeyRecord.pinned(tampered, capsule.fingerprint)
    with pytest.raises(ValueError, match="64 hex digits"):
        fetch_record(client.url, "not-a-fingerprint")
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:9"):
        fetch_record("http://127.0.0.1:9", capsule.fingerprint, timeout=2)


def test_client_names_an_unreachable_capsule():
    """A capsule that does not answer is a ConnectionError naming its URL."""
    client = CapsuleClient("http://127.0.0.1:9", timeout=2)
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:9"):
        client.status()


def test_cli_init_admit_show_and_errors(tmp_path, repo, capsys):
    """``capsule init`` prints the fingerprint, ``admit`` admits a mine, ``show`` lists it;
    an unreachable RPC URL, a bad key and an uninitialised folder exit 2, naming why."""
    rpc = ["--rpc-url", "http://127.0.0.1:9", "--contract", repo.address]
    assert main(["init", "--data", str(tmp_path / "c"), *rpc, "--key-bits", "512"]) == 2
    assert "http://127.0.0.1:9" in capsys.readouterr().err
    assert not (tmp_path / "c" / "capsule.sqlite").exists()
    state = new_state(tmp_path / "c", repo)
    state.close()
    key = verify_key_hex(Ed25519PrivateKey.generate())
    assert main(["admit", "--data", str(tmp_path / "c"), repo.chain.accounts[1], key]) == 0
    assert main(["admit", "--data", str(tmp_path / "c"), repo.chain.accounts[2], "abc"]) == 2
    assert "not an Ed25519 public key" in capsys.readouterr().err
    assert main(["show", "--data", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert state.record.fingerprint in out and repo.chain.accounts[1] in out
    assert main(["show", "--data", str(tmp_path / "nothing")]) == 2
    assert "no capsule database" in capsys.readouterr().err


def start_capsule(folder, chain, repo, store_root) -> tuple[subprocess.Popen, CapsuleClient]:
    """``python -m om_teach.sonar.capsule_cli serve`` on anvil and a directory store; its ready
    line names its URL, PID and fingerprint."""
    command = [sys.executable, "-m", "om_teach.sonar.capsule_cli", "serve", "--data", str(folder)]
    command += ["--rpc-url", chain.node.url, "--contract", repo.address]
    command += ["--store", str(store_root)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([process.stdout], [], [], 60)
    assert ready, "the capsule printed no ready line within 60 s"
    line = json.loads(process.stdout.readline())
    assert line["pid"] == process.pid
    return process, CapsuleClient(line["url"])


def test_a_killed_capsule_process_restarts_without_releasing_twice(tmp_path, mine_keys):
    """The capsule process on anvil releases a round, is SIGKILLed, and restarted on the same
    state: it keeps its key, its admitted mines and its ε, refuses the released round (409),
    and releases the next one with ε composed over both."""
    require_anvil()
    with Chain.anvil(accounts=MINES + 2) as chain:
        repo = ModelRepository.deploy(chain)
        store = DirectoryStore(tmp_path / "store")
        state = CapsuleState.create(
            tmp_path / "capsule", chain_id=chain.web3.eth.chain_id, contract=repo.address,
            key_bits=KEY_BITS, min_contributors=3, noise_multiplier=1.0, budget=20.0,
            delta=1e-5,
        )  # fmt: skip
        for mine in range(3):
            state.admit(chain.accounts[1 + mine], verify_key_hex(mine_keys[mine]))
        capsule = Capsule(repo, store, state)  # to seal to it; it never serves
        process, client = start_capsule(tmp_path / "capsule", chain, repo, store.root)
        try:
            model_id, _ = run_round(repo, store, capsule, mine_keys, 3)
            first = client.aggregate(model_id, 0)
            spent = client.last_epsilon_spent
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            process, client = start_capsule(tmp_path / "capsule", chain, repo, store.root)
            status = client.status()
            assert status["decrypted_rounds"] == [[model_id, 0]]
            assert status["epsilon_spent"] == pytest.approx(spent)
            assert refusal(client.aggregate, model_id, 0).status == 409
            close(repo, store, first, model_id, 0)
            run_round(repo, store, capsule, mine_keys, 3, model_id=model_id, round=1)
            client.aggregate(model_id, 1)
            two = epsilon(noise_multiplier=1.0, sample_rate=1.0, steps=2, delta=1e-5)
            assert client.last_epsilon_spent == pytest.approx(two, rel=1e-9)
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 0
