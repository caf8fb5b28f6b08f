"""Model-centric FL on a real node: a cycle closes once on its reports and publishes FedAvg of
them (checked against the same training done here), workers are rejected with reason codes,
and late, replayed, foreign and malformed reports are refused without changing anything."""

from __future__ import annotations

import copy
import datetime
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors

from om_teach.data.digits import load_digits
from om_teach.fl.client import get_params, local_train
from om_teach.fl.models import mlp
from om_teach.fl.strategy import FedAvg, Update
from om_teach.node.auth import issue
from om_teach.node.client import NodeClient, NodeRequestError
from om_teach.node.process import NodeProcess
from om_teach.node.worker import train_one_cycle

CLIENT = {"batch_size": 8, "learning_rate": 0.1, "local_steps": 3}


def _server(**changes) -> dict:
    config = {
        "cycles": 2,
        "min_workers": 1,
        "max_workers": 3,
        "min_reports": 2,
        "cycle_seconds": 60,
    }
    return {**config, **changes}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    data = tmp_path_factory.mktemp("fl-node")
    owner = issue(data, ["upload", "read"], name="scientist")
    workers = [issue(data, ["train", "read"], name=f"worker {i}") for i in range(60)]
    reader = issue(data, ["read"], name="reader")
    with NodeProcess(data) as n:
        n.owner, n.workers, n.reader = owner, workers, reader
        yield n


def _shards(count: int, rows: int = 24):
    digits = load_digits(0)
    return [
        (digits.X_train[i * rows : (i + 1) * rows], digits.y_train[i * rows : (i + 1) * rows])
        for i in range(count)
    ]


def _host(node, name: str, server: dict) -> tuple[NodeClient, int]:
    owner = NodeClient(node.url, node.owner)
    owner.create_model(name, "digits-mlp")
    owner.upload(name, mlp(0))
    return owner, owner.create_process(name, CLIENT, server)["id"]


def test_a_cycle_publishes_fedavg_of_its_reports(node):
    owner, pid = _host(node, "fl-known", _server())
    shards = _shards(3)
    for i, (X, y) in enumerate(shards):
        answer = train_one_cycle(NodeClient(node.url, node.workers[i]), pid, X, y, seed=i)
        assert answer["status"] == "counted" and answer["cycle"] == 1
    process = owner.process(pid)
    first, second = process["cycles"]
    assert (first["status"], first["published"], second["status"]) == ("closed", 2, "open")
    assert second["version"] == 2 and second["cid"] == owner.model("fl-known")["versions"][1]["cid"]
    updates = []  # the same training, done here
    for i, (X, y) in enumerate(shards):
        model = copy.deepcopy(mlp(0))
        updates.append(
            local_train(
                model, X, y, learning_rate=0.1, batch_size=8, steps=3, rng=np.random.default_rng(i)
            )
        )
        updates[-1] = Update(updates[-1].params, 24)
    names = list(mlp(0).state_dict())
    want = dict(zip(names, FedAvg().aggregate(0, get_params(mlp(0)), updates), strict=True))
    got = load_safetensors(owner.download("fl-known", 2))
    assert sorted(got) == sorted(want)
    for name, tensor in got.items():
        np.testing.assert_allclose(tensor.numpy(), want[name], atol=1e-6, err_msg=name)


def test_workers_are_rejected_with_reason_codes(node):
    _, pid = _host(node, "fl-reasons", _server(cycles=1, max_workers=2, min_reports=1))
    a, b, c = (NodeClient(node.url, t) for t in node.workers[10:13])
    assert a.cycle_request(pid)["status"] == "accepted"
    again = a.cycle_request(pid)
    assert again["reason"] == "cooldown" and 0 < again["retry_after"] <= 60
    assert b.cycle_request(pid)["status"] == "accepted"
    full = c.cycle_request(pid)
    assert full["reason"] == "capacity" and full["retry_after"] > 0
    with pytest.raises(NodeRequestError) as info:
        NodeClient(node.url, node.reader).cycle_request(pid)
    assert info.value.status == 403 and "'train'" in info.value.error
    X, y = _shards(1)[0]
    _, pid2 = _host(node, "fl-done", _server(cycles=1, max_workers=1, min_reports=1))
    assert train_one_cycle(a, pid2, X, y)["status"] == "counted"
    assert b.cycle_request(pid2) == {"status": "rejected", "reason": "closed", "retry_after": None}


def test_bad_reports_are_refused_and_change_nothing(node):
    owner, pid = _host(node, "fl-bad", _server(cycles=1, max_workers=3, min_reports=3))
    a, b = (NodeClient(node.url, t) for t in node.workers[20:22])
    key = a.cycle_request(pid)["request_key"]
    model = mlp(0)
    wrong_shape = {k: v for k, v in model.state_dict().items()}
    wrong_shape["2.bias"] = torch.zeros(9)
    not_finite = {k: v.clone() for k, v in model.state_dict().items()}
    not_finite["0.weight"][0, 0] = float("nan")
    cases = [
        (lambda: b.report(key, model, 8), 403, "not issued to this worker"),
        (lambda: a.report("made-up", model, 8), 403, "not issued"),
        (lambda: a.report(key, wrong_shape, 8), 422, "does not fit"),
        (lambda: a.report(key, not_finite, 8), 422, "NaN"),
        (lambda: a.report(key, model, 25), 422, "1 to 24 examples"),
        (lambda: a.report(key, model, 0), 422, "1 to 24 examples"),
    ]
    for call, status, words in cases:
        with pytest.raises(NodeRequestError) as info:
            call()
        assert (info.value.status, words in info.value.error) == (status, True), info.value
    assert a.report(key, model, 8)["status"] == "counted"
    with pytest.raises(NodeRequestError) as info:
        a.report(key, model, 8)  # a replay of a counted report
    assert info.value.status == 409 and "reported already" in info.value.error
    assert owner.process(pid)["cycles"][0]["status"] == "open"
    assert len(owner.model("fl-bad")["versions"]) == 1
    for bad in (
        {"cycles": 1, "min_workers": 4, "max_workers": 3, "min_reports": 3, "cycle_seconds": 5},
        {"cycles": 0, "min_workers": 1, "max_workers": 1, "min_reports": 1, "cycle_seconds": 5},
    ):
        with pytest.raises(NodeRequestError) as info:
            owner.create_process("fl-bad", CLIENT, bad)
        assert info.value.status == 422


def test_a_cycle_closes_at_its_deadline_and_late_reports_are_refused(node):
    owner, pid = _host(
        node, "fl-late", _server(cycles=2, max_workers=5, min_reports=1, cycle_seconds=4)
    )
    a, b = (NodeClient(node.url, t) for t in node.workers[30:32])
    X, y = _shards(1)[0]
    assert train_one_cycle(a, pid, X, y)["status"] == "counted"
    late_key = b.cycle_request(pid)["request_key"]
    deadline = datetime.datetime.fromisoformat(owner.process(pid)["cycles"][0]["deadline"])
    time.sleep(max(0.0, (deadline - datetime.datetime.now(datetime.UTC)).total_seconds()) + 0.3)
    first = owner.process(pid)["cycles"][0]
    assert (first["status"], first["published"]) == ("closed", 2)
    with pytest.raises(NodeRequestError) as info:
        b.report(late_key, mlp(0), 8)
    assert info.value.status == 409 and "late" in info.value.error


def test_fifty_concurrent_workers_are_each_counted_once(node):
    owner, pid = _host(node, "fl-busy", _server(cycles=1, max_workers=50, min_reports=50))
    shards = _shards(50, rows=8)

    def work(i: int) -> dict:
        with NodeClient(node.url, node.workers[i]) as client:
            return train_one_cycle(client, pid, *shards[i], seed=i)

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(work, range(50)))
    assert [a["status"] for a in answers] == ["counted"] * 50
    [cycle] = owner.process(pid)["cycles"]
    assert (cycle["status"], cycle["published"]) == ("closed", 2)
    assert len(owner.model("fl-busy")["versions"]) == 2


def test_a_plain_cycle_resumes_after_a_kill_with_every_acknowledged_report(tmp_path):
    owner_token = issue(tmp_path, ["upload", "read"])
    tokens = [issue(tmp_path, ["train", "read"]) for _ in range(5)]
    shards = _shards(5)
    node = NodeProcess(tmp_path)
    node.start()
    try:
        node.owner = owner_token  # what _host hosts with
        scientist, pid = _host(
            node, "fl-crash", _server(cycles=1, max_workers=5, min_reports=5, cycle_seconds=120)
        )
        for i in range(3):
            worker = NodeClient(node.url, tokens[i])
            assert train_one_cycle(worker, pid, *shards[i], seed=i)["status"] == "counted"
        pending = NodeClient(node.url, tokens[3]).cycle_request(pid)["request_key"]
        node.kill()
        node.start()
        worker = NodeClient(node.url, tokens[3])
        assert worker.report(pending, mlp(0), 24)["status"] == "counted"  # its key survived
        again = NodeClient(node.url, tokens[0]).cycle_request(pid)
        assert again["reason"] == "cooldown"  # the kill forgot no place
        last = NodeClient(node.url, tokens[4])
        assert train_one_cycle(last, pid, *shards[4], seed=4)["status"] == "counted"
        [cycle] = scientist.process(pid)["cycles"]
        assert (cycle["status"], cycle["published"]) == ("closed", 2)
    finally:
        node.stop()
