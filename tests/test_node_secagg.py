"""Secure aggregation over HTTP on a real node: a secure cycle publishes FedAvg of its workers
to the quantization step, recovers a worker that drops out, and leaves the node nothing but
masked vectors and their sum; a node that gives workers different models (Pasquini et al.) gets
the target's digit with the commitment unbound and nothing with it bound; strangers, copies,
replays and messages out of order are refused; a restart fails the cycle with reason restart."""

from __future__ import annotations

import base64
import copy
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from safetensors.torch import load as load_safetensors

from om_teach.attacks.gradient_leakage import invert_first_layer
from om_teach.attacks.model_inconsistency import dead_first_layer
from om_teach.crypto.secagg import Client
from om_teach.data.digits import load_digits
from om_teach.fl.client import get_params, local_train, set_params
from om_teach.fl.models import mlp
from om_teach.fl.secure import encode_change
from om_teach.fl.strategy import FedAvg, Update, flatten
from om_teach.node.auth import issue
from om_teach.node.client import NodeClient, NodeRequestError
from om_teach.node.process import NodeProcess
from om_teach.node.secagg import b64, context
from om_teach.node.worker import train_one_secure_cycle

CLIENT = {"batch_size": 8, "learning_rate": 0.1, "local_steps": 3}


def _server(workers: int, **changes) -> dict:
    config = {
        "cycles": 1,
        "min_workers": 1,
        "max_workers": workers,
        "min_reports": 3,
        "cycle_seconds": 120,
        "round_seconds": 5,
        "secure_aggregation": True,
    }
    return {**config, **changes}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    data = tmp_path_factory.mktemp("secagg-node")
    owner = issue(data, ["upload", "read"], name="scientist")
    workers = [issue(data, ["train", "read"], name=f"worker {i}") for i in range(40)]
    with NodeProcess(data) as n:
        n.data, n.owner, n.workers = data, owner, workers
        yield n


def _host(node, name: str, server: dict, client: dict = CLIENT, weights=None):
    owner = NodeClient(node.url, node.owner)
    owner.create_model(name, "digits-mlp")
    owner.upload(name, weights if weights is not None else mlp(0))
    return owner, owner.create_process(name, client, server)["id"]


def _shards(count: int, rows: int = 24, start: int = 0):
    digits = load_digits(0)
    return [
        (digits.X_train[i * rows : (i + 1) * rows], digits.y_train[i * rows : (i + 1) * rows])
        for i in range(start, start + count)
    ]


def _run(node, pid: int, tokens, shards, **per_worker) -> list[dict]:
    """Every worker's cycle at once, each in its own thread; ``per_worker`` maps a keyword of
    train_one_secure_cycle to one value per worker."""

    def work(i: int) -> dict:
        extra = {k: v[i] for k, v in per_worker.items()}
        with NodeClient(node.url, tokens[i], **extra.pop("client", {})) as c:
            return train_one_secure_cycle(c, pid, *shards[i], seed=i, **extra)

    with ThreadPoolExecutor(max_workers=len(shards)) as pool:
        return list(pool.map(work, range(len(shards))))


def _masked_rows(node, pid: int) -> list[bytes]:
    with sqlite3.connect(node.data / "node.sqlite") as con:
        return [
            row[0]
            for row in con.execute(
                "SELECT m.payload FROM fl_secagg_messages m JOIN fl_cycles c ON m.cycle_id = c.id "
                "WHERE c.process_id = ? AND m.kind = 'masked'",
                (pid,),
            )
        ]


def test_a_secure_cycle_publishes_fedavg_and_recovers_a_dropout(node):
    owner, pid = _host(node, "sa-known", _server(4))
    shards = _shards(4)
    answers = _run(node, pid, node.workers[:4], shards, drop_after=[None, None, None, "shares"])
    assert [a["status"] for a in answers] == ["closed"] * 3 + ["dropped"]
    [cycle] = owner.process(pid)["cycles"]
    assert (cycle["status"], cycle["published"]) == ("closed", 2)
    updates = []  # the survivors' training, done here in the clear
    for i, (X, y) in enumerate(shards[:3]):
        update = local_train(copy.deepcopy(mlp(0)), X, y, learning_rate=0.1, batch_size=8,
                             steps=3, rng=np.random.default_rng(i))  # fmt: skip
        updates.append(Update(update.params, 24))
    want = FedAvg().aggregate(0, get_params(mlp(0)), updates)
    got = load_safetensors(owner.download("sa-known", 2))
    step = 2 / (1 << 24)  # each survivor's change is quantized to this step
    for name, expected in zip(mlp(0).state_dict(), want, strict=True):
        np.testing.assert_allclose(got[name].numpy(), expected, atol=3 * step + 1e-6, err_msg=name)


def test_the_node_sees_masked_vectors_that_say_nothing_and_no_weights(node):
    """What the node stored of a secure cycle: no report in the clear, and masked vectors that
    do not follow their inputs (each is the input plus masks uniform over Z_2^32)."""
    _, pid = _host(node, "sa-view", _server(3))
    shards = _shards(3, start=4)
    assert [a["status"] for a in _run(node, pid, node.workers[4:7], shards)] == ["closed"] * 3
    masked = [np.frombuffer(row, dtype="<u4").astype(float) for row in _masked_rows(node, pid)]
    assert len(masked) == 3
    inputs = []
    for i, (X, y) in enumerate(shards):
        model = copy.deepcopy(mlp(0))
        local_train(model, X, y, learning_rate=0.1, batch_size=8, steps=3,
                    rng=np.random.default_rng(i))  # fmt: skip
        change = flatten(get_params(model)) - flatten(get_params(mlp(0)))
        inputs.append(encode_change(change, 24, max_examples=24, target_range=1 << 24))
    for vector, plain in zip(masked, inputs, strict=True):
        assert abs(vector.mean() / 2**32 - 0.5) < 0.02  # uniform, not near the inputs' centre
        assert abs(np.corrcoef(vector[:-1], plain[:-1].astype(float))[0, 1]) < 0.05
    with sqlite3.connect(node.data / "node.sqlite") as con:
        reports = con.execute(
            "SELECT count(*) FROM fl_assignments a JOIN fl_cycles c ON a.cycle_id = c.id "
            "WHERE c.process_id = ? AND a.report_cid IS NOT NULL",
            (pid,),
        ).fetchone()[0]
    assert reports == 0
    place = NodeClient(node.url, node.workers[7]).cycle_request(pid)
    assert place["reason"] == "closed"  # the process's one cycle is done
    _, pid2 = _host(node, "sa-plain", _server(3, cycles=2))
    key = NodeClient(node.url, node.workers[7]).cycle_request(pid2)["request_key"]
    with pytest.raises(NodeRequestError) as info:
        NodeClient(node.url, node.workers[7]).report(key, mlp(0), 24)
    assert info.value.status == 409 and "no weights in the clear" in info.value.error


class Inconsistent(httpx.BaseTransport):
    """A node that gives every worker but the target another model: it rewrites their places
    to a version whose first layer is dead, and names its CID, which their check then passes."""

    def __init__(self, version: int, cid: str) -> None:
        self.inner, self.version, self.cid = httpx.HTTPTransport(), version, cid

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/cycle-request"):
            return response
        place = json.loads(response.read())
        if place.get("status") == "accepted":
            place.update(version=self.version, cid=self.cid)
        return httpx.Response(response.status_code, json=place)


@pytest.mark.parametrize("bound", [False, True], ids=["commitment unbound", "bound"])
def test_model_inconsistency_is_stopped_by_the_bound_commitment(node, bound):
    """Ten workers, each one digit, one step; the other nine are given a dead first layer.
    Unbound, the published model's first-layer change is the target's alone and inverts to its
    digit; bound into the masks, the nine and the target cannot open each other's shares, every
    worker aborts, and nothing is published."""
    real = mlp(0)
    name = f"sa-pasquini-{str(bound).lower()}"
    one_step = {"batch_size": 1, "learning_rate": 0.1, "local_steps": 1}
    owner, pid = _host(node, name, _server(10, min_reports=6), one_step, real)
    dead = copy.deepcopy(real)
    set_params(dead, dead_first_layer(get_params(real)))
    forged = owner.upload(name, dead)  # version 2, never committed to any cycle
    digits = load_digits(0)
    shards = [(digits.X_train[i : i + 1], digits.y_train[i : i + 1]) for i in range(10)]
    clients = [{}] + [{"transport": Inconsistent(forged["version"], forged["cid"])}] * 9
    answers = _run(
        node, pid, node.workers[10:20], shards, client=clients, bind_commitment=[bound] * 10
    )
    [cycle] = owner.process(pid)["cycles"][:1]
    if not bound:
        assert [a["status"] for a in answers] == ["closed"] * 10
        published = load_safetensors(owner.download(name, cycle["published"]))
        start = real.state_dict()
        weight = (published["0.weight"] - start["0.weight"]).numpy()
        bias = (published["0.bias"] - start["0.bias"]).numpy()
        assert np.abs(invert_first_layer(weight, bias) - shards[0][0][0]).mean() < 0.02
        return
    assert [a["status"] for a in answers] == ["aborted"] * 10
    assert all("failed AES-GCM authentication" in a["reason"] for a in answers)
    assert cycle["status"] == "failed" and "aborted" in cycle["reason"]
    assert [v["version"] for v in owner.model(name)["versions"]] == [1, 2]


def test_strangers_copies_replays_and_messages_out_of_order_are_refused(node):
    _, pid = _host(node, "sa-bad", _server(3))
    a, b, stranger = (NodeClient(node.url, t) for t in node.workers[20:23])
    place_a, place_b = a.cycle_request(pid), b.cycle_request(pid)
    key_a, key_b = place_a["request_key"], place_b["request_key"]
    me = Client(place_a["secure_aggregation"]["client_id"], [0] * 8, threshold=3,
                context=context(pid, 1, place_a["cid"]))  # fmt: skip
    keys = me.advertise_keys()
    message = {"c_pk": b64(keys.c_pk), "s_pk": b64(keys.s_pk)}

    def refused(client, key, round, body) -> NodeRequestError:
        with pytest.raises(NodeRequestError) as info:
            client.secagg_send(key, round, body)
        return info.value

    assert refused(stranger, key_a, "keys", message).status == 403  # not its key
    assert refused(stranger, "made-up", "keys", message).status == 403
    assert refused(a, key_a, "shares", {"shares": []}).status == 409  # out of order
    assert a.secagg_send(key_a, "keys", message)["status"] == "received"
    replay = refused(a, key_a, "keys", message)
    assert replay.status == 409 and "already" in replay.error
    copied = refused(b, key_b, "keys", message)
    assert copied.status == 409 and "another worker advertised" in copied.error
    short = refused(b, key_b, "keys", {"c_pk": b64(b"x" * 31), "s_pk": message["s_pk"]})
    assert short.status == 422 and "31 bytes" in short.error
    assert refused(b, key_b, "keys", {"c_pk": "not base64!"}).status == 422
    assert refused(b, key_b, "masked", b"\x00" * 8).status == 409
    with pytest.raises(NodeRequestError) as info:
        b.secagg_state("made-up")
    assert info.value.status == 403
    state = a.secagg_state(key_a)
    assert (state["status"], state["round"]) == ("open", "keys")  # nothing moved
    with sqlite3.connect(node.data / "node.sqlite") as con:
        stored = con.execute(
            "SELECT count(*) FROM fl_secagg_messages m JOIN fl_cycles c ON m.cycle_id = c.id "
            "WHERE c.process_id = ?",
            (pid,),
        ).fetchone()[0]
    assert stored == 1
    assert base64.b64decode(message["c_pk"]) == keys.c_pk


@pytest.mark.parametrize(
    "change, error",
    [
        ({"min_reports": 1, "min_workers": 1}, "at least 2"),
        ({"min_workers": 4, "max_workers": 3}, "exceeds max_workers"),
        ({"round_seconds": 0}, "round_seconds must be a positive number"),
    ],
)
def test_a_secure_config_that_cannot_work_is_refused(node, change, error):
    owner = NodeClient(node.url, node.owner)
    with pytest.raises(NodeRequestError) as info:
        owner.create_process("sa-known", CLIENT, _server(3, **change))
    assert info.value.status == 422 and error in info.value.error


def test_a_restart_fails_a_secure_cycle_with_reason_restart(tmp_path):
    owner = issue(tmp_path, ["upload", "read"])
    tokens = [issue(tmp_path, ["train", "read"]) for _ in range(3)]
    node = NodeProcess(tmp_path)
    node.start()
    try:
        node.owner = owner
        scientist, pid = _host(node, "sa-crash", _server(3, cycles=2))
        workers = [NodeClient(node.url, t) for t in tokens]
        keys = []
        for w in workers:
            place = w.cycle_request(pid)
            me = Client(place["secure_aggregation"]["client_id"], [0] * 8, threshold=3)
            advertised = me.advertise_keys()
            w.secagg_send(place["request_key"], "keys",
                          {"c_pk": b64(advertised.c_pk), "s_pk": b64(advertised.s_pk)})  # fmt: skip
            keys.append(place["request_key"])
        assert workers[0].secagg_state(keys[0])["round"] == "shares"
        node.kill()
        node.start()
        told = workers[0].secagg_state(keys[0])
        assert (told["status"], told["reason"]) == ("failed", "restart")
        first, second = scientist.process(pid)["cycles"]
        assert (first["status"], first["reason"]) == ("failed", "restart")
        assert (second["status"], second["round"], second["version"]) == ("open", "keys", 1)
        shards = _shards(3)
        answers = _run(node, pid, tokens, shards)  # the next cycle runs with fresh keys
        assert [a["status"] for a in answers] == ["closed"] * 3
    finally:
        node.stop()
