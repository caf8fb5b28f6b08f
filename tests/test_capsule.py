"""om_teach.sonar.capsule: the Helium key holder, its refusals, and its HTTP API.

Small fake mines submit Paillier-encrypted gradients through the real contract on eth-tester,
into a memory store, as the design's formats say; the capsule must release the round's sum
and nothing else.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from om_teach.crypto.paillier import EncryptedVector, generate_keypair
from om_teach.privacy.accounting import epsilon
from om_teach.privacy.updates import clip
from om_teach.sonar.capsule import (
    NO_CIPHERTEXTS,
    Capsule,
    CapsuleClient,
    CapsuleRefusal,
    CapsuleServer,
    main,
)
from om_teach.sonar.chain import Chain, find_anvil
from om_teach.sonar.contract import ModelRepository
from om_teach.storage import DirectoryStore, MemoryStore

KEY_BITS = 1024
CLIP = 1.0
MINES = 5
ETHER = 10**18


@pytest.fixture(scope="module")
def chain():
    return Chain.embedded(accounts=MINES + 2)


@pytest.fixture(scope="module")
def repo(chain):
    return ModelRepository.deploy(chain)


@pytest.fixture(scope="module")
def foreign_key():
    return generate_keypair(KEY_BITS)


@pytest.fixture
def store():
    return MemoryStore()


def make_capsule(repo, store, **settings) -> Capsule:
    settings = {"min_contributors": 3, "noise_multiplier": 0.0, "budget": 10.0, **settings}
    return Capsule(repo, store, key_bits=KEY_BITS, rng=np.random.default_rng(0), **settings)


def bundle_bytes(n: int, features: int, round: int, *, max_summands: int = MINES) -> bytes:
    """A model bundle in the design's format (canonical JSON)."""
    bundle = {
        "format": "om-teach/sonar-model/1",
        "weights": [0.0] * features,
        "bias": 0.0,
        "public_key_n": str(n),
        "precision": 1e-6,
        "max_abs": CLIP,
        "max_summands": max_summands,
        "clip_norm": CLIP,
        "learning_rate": 0.1,
        "round": round,
    }
    return json.dumps(bundle, sort_keys=True, separators=(",", ":")).encode()


def post(repo, store, n: int, *, features: int = 10) -> int:
    """The scientist posts a model whose bundle names key ``n``; returns its id."""
    cid = store.put(bundle_bytes(n, features, 0))
    owner = repo.chain.accounts[0]
    model_id, _ = repo.post_model(
        cid, bounty=ETHER, initial_error=1.0, target_error=0.1, sender=owner
    )
    return model_id


def next_round(repo, store, model_id: int, n: int, round: int, *, features: int = 10) -> None:
    """The scientist records round ``round``'s model, opening round ``round + 1``."""
    cid = store.put(bundle_bytes(n, features, round + 1))
    repo.evaluate_round(model_id, round, cid, 0.5, sender=repo.chain.accounts[0])


def submit(repo, store, model_id, round, mine, gradient, public_key) -> str:
    """Mine number ``mine`` clips, encrypts, stores and submits ``gradient``; returns the CID."""
    vector = EncryptedVector.encrypt(
        public_key, clip(gradient, clip_norm=CLIP), max_abs=CLIP, max_summands=MINES
    )
    cid = store.put(json.dumps(vector.to_dict()).encode())
    repo.submit_gradient(model_id, round, cid, sender=repo.chain.accounts[1 + mine])
    return cid


def gradients(count: int, length: int = 11, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1.0, size=length) for _ in range(count)]


def run_round(repo, store, capsule, count: int, *, round: int = 0, model_id=None):
    """Post a model (unless given) and have ``count`` mines submit; the clipped gradients."""
    n = capsule.public_key.n
    if model_id is None:
        model_id = post(repo, store, n)
    clipped = []
    for mine, g in enumerate(gradients(count, seed=round)):
        submit(repo, store, model_id, round, mine, g, capsule.public_key)
        clipped.append(clip(g, clip_norm=CLIP))
    return model_id, clipped


def refusal(call, *args) -> CapsuleRefusal:
    with pytest.raises(CapsuleRefusal) as caught:
        call(*args)
    return caught.value


def test_aggregate_is_the_sum_of_clipped_gradients(repo, store):
    """Without noise the release is the exact sum of the clipped gradients, to the precision."""
    capsule = make_capsule(repo, store)
    model_id, clipped = run_round(repo, store, capsule, 4)
    result = capsule.aggregate(model_id, 0)
    np.testing.assert_allclose(result.sum, np.sum(clipped, axis=0), atol=1e-6)
    assert result.contributors == 4
    assert result.epsilon_spent == result.epsilon_total == float("inf")
    assert capsule.decrypted_rounds == [(model_id, 0)]


def test_noise_has_std_z_c_and_epsilon_matches_the_accountant(repo, store):
    """With z > 0 the noise has std z·C, and ε after two rounds is the accountant's ε."""
    z, features = 0.5, 1999
    capsule = make_capsule(repo, store, noise_multiplier=z, budget=50.0)
    n = capsule.public_key.n
    model_id = post(repo, store, n, features=features)
    spent = []
    for round in range(2):
        exact = []
        for mine, g in enumerate(gradients(3, length=features + 1, seed=round)):
            submit(repo, store, model_id, round, mine, g, capsule.public_key)
            exact.append(clip(g, clip_norm=CLIP))
        result = capsule.aggregate(model_id, round)
        noise = result.sum - np.sum(exact, axis=0)
        assert abs(noise.mean()) < 0.05
        assert noise.std() == pytest.approx(z * CLIP, rel=0.08)
        spent.append(result.epsilon_spent)
        next_round(repo, store, model_id, n, round, features=features)
    for steps, eps in enumerate(spent, start=1):
        expected = epsilon(noise_multiplier=z, sample_rate=1.0, steps=steps, delta=1e-5)
        assert eps == pytest.approx(expected, rel=1e-9)
    assert capsule.epsilon_spent == spent[-1] and result.epsilon_total == 50.0


def test_a_round_released_late_uses_its_own_bundle(repo, store):
    """Round 0 released after the scientist moved on is checked against the posted bundle."""
    capsule = make_capsule(repo, store)
    model_id, clipped = run_round(repo, store, capsule, 3)
    next_round(repo, store, model_id, capsule.public_key.n, 0)
    assert repo.model_cid(model_id) != repo.events("ModelPosted", model_id=model_id)[0].args["cid"]
    np.testing.assert_allclose(capsule.aggregate(model_id, 0).sum, np.sum(clipped, 0), atol=1e-6)


def test_refuses_fewer_than_k_distinct_submitters(repo, store):
    """Two submitters under k = 3 are refused (403); a third one makes the round releasable."""
    capsule = make_capsule(repo, store)
    model_id, _ = run_round(repo, store, capsule, 2)
    refused = refusal(capsule.aggregate, model_id, 0)
    assert refused.status == 403 and "2 distinct submitter(s)" in str(refused)
    assert capsule.decrypted_rounds == []
    submit(repo, store, model_id, 0, 2, gradients(1, seed=9)[0], capsule.public_key)
    assert capsule.aggregate(model_id, 0).contributors == 3


class RepeatedSubmitter:
    """The contract client, except that the round's first submitter appears twice."""

    def __init__(self, repo):
        self.repo = repo

    def __getattr__(self, name):
        return getattr(self.repo, name)

    def submitters(self, model_id, round):
        first, *_, last = self.repo.submitters(model_id, round)
        return [first, first, last]


def test_counts_distinct_submitters_only(repo, store):
    """A contract that lists one address twice yields one contributor, and is refused."""
    capsule = make_capsule(RepeatedSubmitter(repo), store)
    model_id, _ = run_round(repo, store, capsule, 3)
    refused = refusal(capsule.aggregate, model_id, 0)
    assert refused.status == 403 and "2 distinct submitter(s)" in str(refused)
    capsule.min_contributors = 2
    assert "repeats a submitter" in str(refusal(capsule.aggregate, model_id, 0))


def test_refuses_a_second_decryption_of_a_round(repo, store):
    """A round is decrypted once: asking again is 409."""
    capsule = make_capsule(repo, store)
    model_id, _ = run_round(repo, store, capsule, 3)
    capsule.aggregate(model_id, 0)
    refused = refusal(capsule.aggregate, model_id, 0)
    assert refused.status == 409 and "already decrypted" in str(refused)


def test_refuses_over_budget_before_decrypting(repo, store, monkeypatch):
    """A release the budget cannot afford is 403, spends nothing, and decrypts nothing."""
    decryptions = []
    original = EncryptedVector.decrypt
    monkeypatch.setattr(
        EncryptedVector, "decrypt", lambda self, key: decryptions.append(1) or original(self, key)
    )
    one_round = epsilon(noise_multiplier=1.0, sample_rate=1.0, steps=1, delta=1e-5)
    capsule = make_capsule(repo, store, noise_multiplier=1.0, budget=one_round / 2)
    model_id, _ = run_round(repo, store, capsule, 3)
    refused = refusal(capsule.aggregate, model_id, 0)
    assert refused.status == 403 and "over the budget" in str(refused)
    assert capsule.budget.spent == 0 and capsule.budget.history == []
    assert decryptions == [] and capsule.decrypted_rounds == []


def test_refuses_a_ciphertext_under_another_key(repo, store, foreign_key):
    """A stored gradient under another key is refused, naming its submitter."""
    capsule = make_capsule(repo, store)
    model_id, _ = run_round(repo, store, capsule, 3)
    rogue = repo.chain.accounts[1 + 3]
    submit(repo, store, model_id, 0, 3, gradients(1)[0], foreign_key[0])
    refused = refusal(capsule.aggregate, model_id, 0)
    assert rogue in str(refused) and "another public key" in str(refused)
    assert capsule.decrypted_rounds == []


@pytest.mark.parametrize(
    ("values", "max_summands", "problem"),
    [(12, MINES, "has 12 values; the model needs 11"), (11, MINES + 1, "has layout")],
)
def test_refuses_a_gradient_of_the_wrong_shape_or_layout(
    repo, store, values, max_summands, problem
):
    """A gradient of the wrong length or packed with another layout is refused, naming it."""
    capsule = make_capsule(repo, store)
    model_id, _ = run_round(repo, store, capsule, 3)
    vector = EncryptedVector.encrypt(
        capsule.public_key, np.zeros(values), max_abs=CLIP, max_summands=max_summands
    )
    cid = store.put(json.dumps(vector.to_dict()).encode())
    repo.submit_gradient(model_id, 0, cid, sender=repo.chain.accounts[4])
    refused = refusal(capsule.aggregate, model_id, 0)
    assert problem in str(refused) and cid in str(refused) and capsule.decrypted_rounds == []


def test_refuses_tampered_content(repo, store):
    """Stored content that does not match its CID is refused, naming the CID."""
    capsule = make_capsule(repo, store)
    model_id, _ = run_round(repo, store, capsule, 3)
    cid = repo.gradient_cids(model_id, 0)[1]
    store._blocks[cid] = b" " + store._blocks[cid]  # still the same JSON, but not its CID
    refused = refusal(capsule.aggregate, model_id, 0)
    assert cid in str(refused) and "tampered" in str(refused)


def test_refuses_a_bundle_under_another_key(repo, store, foreign_key):
    """A round whose model bundle names another key is refused before anything is fetched."""
    capsule = make_capsule(repo, store)
    model_id = post(repo, store, foreign_key[0].n)
    for mine, g in enumerate(gradients(3)):
        submit(repo, store, model_id, 0, mine, g, foreign_key[0])
    refused = refusal(capsule.aggregate, model_id, 0)
    assert "not the capsule's" in str(refused) and capsule.decrypted_rounds == []


def test_refuses_unknown_models_and_rounds_not_opened(repo, store):
    """A model that does not exist and a round not yet open are 404."""
    capsule = make_capsule(repo, store)
    model_id, _ = run_round(repo, store, capsule, 3)
    assert refusal(capsule.aggregate, 10**6, 0).status == 404
    assert refusal(capsule.aggregate, model_id, 1).status == 404
    assert refusal(capsule.aggregate, model_id, -1).status == 400


def test_settings_are_checked(repo, store):
    """A threshold below 1 or a negative noise multiplier is refused at construction."""
    with pytest.raises(ValueError, match="min_contributors"):
        Capsule(repo, store, key_bits=KEY_BITS, min_contributors=0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        Capsule(repo, store, key_bits=KEY_BITS, noise_multiplier=-1.0)
    with pytest.raises(ValueError, match="budget"):
        Capsule(repo, store, key_bits=KEY_BITS, budget=0.0)


@pytest.fixture
def served(repo, store):
    """A capsule serving HTTP from a thread of this process, and a client for it."""
    capsule = make_capsule(repo, store)
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


def test_http_round_trip(served, repo, store):
    """Over HTTP: the public key, the round's sum and count, ε, then 409 for a second call."""
    capsule, client = served
    assert client.public_key() == capsule.public_key
    model_id, clipped = run_round(repo, store, capsule, 3)
    total, count = client.aggregate(model_id, 0)
    np.testing.assert_allclose(total, np.sum(clipped, axis=0), atol=1e-6)
    assert count == 3 and client.last_epsilon_spent == float("inf")
    refused = refusal(client.aggregate, model_id, 0)
    assert refused.status == 409 and "already decrypted" in str(refused)
    assert client.status()["decrypted_rounds"] == [[model_id, 0]]


def test_http_refuses_ciphertexts_handed_to_it(served, repo, store):
    """A POST carrying a ciphertext, to any route, is 400; no route returns the private key."""
    capsule, client = served
    model_id, _ = run_round(repo, store, capsule, 3)
    cid = repo.gradient_cids(model_id, 0)[0]
    vector = json.loads(store.get(cid))
    for path, body in [
        ("/decrypt", vector),
        ("/decrypt", {"ciphertext": vector["ciphertexts"][0]}),
        (f"/models/{model_id}/rounds/0/aggregate", {"ciphertexts": vector["ciphertexts"]}),
    ]:
        assert post_json(client.url + path, body) == (400, {"error": NO_CIPHERTEXTS})
    assert capsule.decrypted_rounds == []
    for path in ("/private-key", "/key", "/"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(client.url + path, timeout=10)
        assert caught.value.code == 404
    text = json.dumps(client.status()) + str(client.public_key().n)
    assert str(capsule._private_key.p) not in text and str(capsule._private_key.q) not in text


def test_client_names_an_unreachable_capsule():
    """A capsule that does not answer is a ConnectionError naming its URL."""
    client = CapsuleClient("http://127.0.0.1:9", timeout=2)
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:9"):
        client.public_key()


def test_an_adversarial_scientist_cannot_isolate_one_gradient(served, repo, store):
    """A scientist with the client, the store and spare addresses fails to learn one mine's
    gradient: alone in a round, copied by Sybils, handed over, or replayed in the next round."""
    capsule, client = served
    n, key = capsule.public_key.n, capsule.public_key
    victim = gradients(1, seed=42)[0]

    model_id = post(repo, store, n)
    victim_cid = submit(repo, store, model_id, 0, 0, victim, key)
    assert refusal(client.aggregate, model_id, 0).status == 403

    for sybil in (1, 2):
        repo.submit_gradient(model_id, 0, victim_cid, sender=repo.chain.accounts[1 + sybil])
    assert "more than once" in str(refusal(client.aggregate, model_id, 0))

    status, _ = post_json(client.url + "/decrypt", json.loads(store.get(victim_cid)))
    assert status == 400
    assert capsule.decrypted_rounds == []

    honest, _ = run_round(repo, store, capsule, 3)
    client.aggregate(honest, 0)
    assert refusal(client.aggregate, honest, 0).status == 409
    next_round(repo, store, honest, n, 0)
    replayed = repo.gradient_cids(honest, 0)[0]
    repo.submit_gradient(honest, 1, replayed, sender=repo.chain.accounts[4])
    for sybil in (1, 2):
        zero = EncryptedVector.encrypt(key, np.zeros(11), max_abs=CLIP, max_summands=MINES)
        cid = store.put(json.dumps(zero.to_dict()).encode())
        repo.submit_gradient(honest, 1, cid, sender=repo.chain.accounts[1 + sybil])
    assert "already aggregated" in str(refusal(client.aggregate, honest, 1))
    assert capsule.decrypted_rounds == [(honest, 0)]


def test_main_names_an_unreachable_rpc_url(tmp_path, repo, capsys):
    """The command exits with status 2 and names an RPC URL that does not answer."""
    argv = ["--rpc-url", "http://127.0.0.1:9", "--contract", repo.address]
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--store", str(tmp_path), "--key-bits", "512"])
    assert exited.value.code == 2 and "http://127.0.0.1:9" in capsys.readouterr().err


def test_capsule_process_on_anvil(tmp_path):
    """``python -m om_teach.sonar.capsule`` against anvil and a directory store: it prints its
    ready line, releases a round's sum over HTTP, and stops on SIGTERM."""
    try:
        find_anvil()
    except FileNotFoundError as error:
        pytest.skip(f"anvil is not installed: {error}")
    with Chain.anvil(accounts=MINES + 2) as chain:
        repo = ModelRepository.deploy(chain)
        store = DirectoryStore(tmp_path / "store")
        command = [sys.executable, "-m", "om_teach.sonar.capsule", "--rpc-url", chain.node.url]
        command += ["--contract", repo.address, "--store", str(store.root), "--key-bits", "1024"]
        command += ["--noise-multiplier", "0", "--min-contributors", "3"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            ready, _, _ = select.select([process.stdout], [], [], 60)
            assert ready, "the capsule printed no ready line within 60 s"
            line = json.loads(process.stdout.readline())
            assert line["pid"] == process.pid
            client = CapsuleClient(line["url"])
            key = client.public_key()
            model_id = post(repo, store, key.n)
            clipped = []
            for mine, g in enumerate(gradients(3)):
                submit(repo, store, model_id, 0, mine, g, key)
                clipped.append(clip(g, clip_norm=CLIP))
            total, count = client.aggregate(model_id, 0)
            np.testing.assert_allclose(total, np.sum(clipped, axis=0), atol=1e-6)
            assert count == 3
            assert refusal(client.aggregate, model_id, 0).status == 409
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 0
