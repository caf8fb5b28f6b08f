"""The node against a real uvicorn on 127.0.0.1 (SQLite in its data folder): hosting and
prediction, every auth and error path, no unpickling, verified downloads, concurrency, and a
kill -9 during uploads."""

from __future__ import annotations

import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from om_teach.fl.models import mlp
from om_teach.node.client import DownloadMismatch, NodeClient, NodeRequestError
from om_teach.node.process import NodeProcess
from om_teach.storage.cid import cid_of

from .node_helpers import prepare, weights

LIMIT_MB = 0.05  # 52 KB: a digits-mlp (10 KB) fits, a 60 KB blob does not


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    data = tmp_path_factory.mktemp("node")
    tokens = prepare(data)
    with NodeProcess(data, extra=("--max-upload-mb", str(LIMIT_MB), "--max-batch", "256")) as n:
        n.tokens = tokens
        yield n


def client(node, scope: str | None = "both", **kwargs) -> NodeClient:
    return NodeClient(node.url, node.tokens[scope] if scope else None, **kwargs)


def _status(call) -> NodeRequestError:
    with pytest.raises(NodeRequestError) as info:
        call()
    return info.value


def test_a_model_is_hosted_versioned_downloaded_and_used(node):
    c = client(node)
    c.create_model("digits", "digits-mlp", description="module 02's network")
    first = c.upload("digits", weights(0))
    second = c.upload("digits", mlp(1))
    assert (first["version"], second["version"]) == (1, 2)
    assert first["cid"] == cid_of(weights(0))
    assert c.upload("digits", weights(0)) == first  # the same bytes: the same version
    listed = c.model("digits")
    assert [v["cid"] for v in listed["versions"]] == [first["cid"], second["cid"]]
    assert c.download("digits", 1) == weights(0)
    rows = np.random.default_rng(0).random((5, 64))
    got = c.predict("digits", rows, version=1)
    want = mlp(0)(torch.tensor(rows, dtype=torch.float32)).tolist()
    assert got["version"] == 1 and np.allclose(got["outputs"], want, atol=1e-6)
    assert c.predict("digits", rows)["version"] == 2  # the newest by default
    loaded = c.load("digits", 2)
    assert torch.equal(loaded[0].weight, mlp(1)[0].weight)


def test_access_needs_the_right_token_and_public_models_need_none(node):
    owner = client(node)
    owner.create_model("private", "diabetes-linear")
    owner.create_model("open", "diabetes-linear", public=True)
    for name in ("private", "open"):
        owner.upload(name, torch.nn.Linear(10, 1))
    anonymous, reader, uploader = client(node, None), client(node, "read"), client(node, "upload")
    assert {m["id"] for m in anonymous.models()} == {"open"}
    assert anonymous.predict("open", [[0.0] * 10])["version"] == 1
    assert anonymous.download("open", 1) == owner.download("open", 1)
    assert _status(lambda: anonymous.predict("private", [[0.0] * 10])).status == 401
    assert _status(lambda: anonymous.download("private", 1)).status == 401
    assert reader.predict("private", [[0.0] * 10])["version"] == 1
    denied = _status(lambda: reader.upload("private", torch.nn.Linear(10, 1)))
    assert denied.status == 403 and "'upload'" in denied.error and "scope" in denied.hint
    assert _status(lambda: uploader.predict("private", [[0.0] * 10])).status == 403
    assert {m["id"] for m in client(node, "train").models()} == {"open"}  # no read scope
    assert _status(lambda: client(node, "train").predict("private", [[0.0] * 10])).status == 403
    assert client(node, "admin").predict("private", [[0.0] * 10])["version"] == 1
    forged = NodeClient(node.url, "omt_" + "A" * 43)
    assert _status(forged.models).status == 401
    assert len(owner.model("private")["versions"]) == 1  # nothing changed


def test_bad_input_gets_a_clear_error_and_changes_nothing(node):
    c = client(node)
    c.create_model("strict", "digits-mlp")
    c.upload("strict", weights(0))
    wrong_shape = {k: v for k, v in mlp(0).state_dict().items()}
    wrong_shape["2.weight"] = torch.zeros(9, 32)
    wrong_dtype = {k: v.double() for k, v in mlp(0).state_dict().items()}
    cases = [
        (lambda: c.upload("strict", b"\x00" * 200), 422, "not a safetensors file"),
        (lambda: c.upload("strict", b"\x01" * 60_000), 413, "larger than this node accepts"),
        (lambda: c.upload("strict", save_safetensors(wrong_shape)), 422, "needs (10, 32)"),
        (lambda: c.upload("strict", save_safetensors(wrong_dtype)), 422, "torch.float32"),
        (lambda: c.upload("strict", torch.nn.Linear(10, 1)), 422, "lacks"),
        (lambda: c.upload("nobody-made-this", weights(0)), 404, "no model"),
        (lambda: c.create_model("other", "resnet-9000"), 422, "unknown architecture"),
        (lambda: c.create_model("Bad Id!", "digits-mlp"), 422, "bad model id"),
        (lambda: c.create_model("strict", "diabetes-linear"), 409, "exists"),
        (lambda: c.predict("strict", [[0.0] * 63]), 422, "rows of 64 numbers"),
        (lambda: c.predict("strict", [["a"] * 64]), 422, "rows of 64 numbers"),
        (lambda: c.predict("strict", [[True] * 64]), 422, "rows of 64 numbers"),
        (lambda: c.predict("strict", [[0.0] * 64, [0.0] * 3]), 422, "rows of 64 numbers"),
        (lambda: c.predict("strict", [[0.0] * 64] * 257), 413, "1 to 256 rows"),
        (lambda: c.predict("strict", [[0.0] * 64], version=7), 404, "no version 7"),
    ]
    for call, status, words in cases:
        error = _status(call)
        assert (error.status, words in error.error) == (status, True), error
        assert error.hint
    row = ", ".join(["0.0"] * 63 + ["NaN"])  # JSON has no NaN; Python's parser takes it
    headers = {"Authorization": f"Bearer {node.tokens['both']}", "Content-Type": "application/json"}
    nan = httpx.post(
        node.url + "/models/strict/predict", headers=headers, content='{"inputs": [[' + row + "]]}"
    )
    assert nan.status_code == 422 and "finite" in nan.json()["error"]
    assert [v["version"] for v in c.model("strict")["versions"]] == [1]
    body = httpx.post(
        node.url + "/models",
        json={"id": 3},
        headers={"Authorization": f"Bearer {node.tokens['both']}"},
    ).json()
    assert set(body) == {"error", "hint"} and "id" in body["error"]


def test_odd_requests_get_json_refusals_not_server_errors(node):
    """Routes that do not exist, methods that do not apply, bodies that are not JSON or too
    large, numbers past SQL's integers, NUL in an id, a known token under another scheme."""
    auth = {"Authorization": f"Bearer {node.tokens['both']}"}
    client(node).create_model("odd", "digits-mlp", public=True)
    client(node).upload("odd", weights(0))
    cases = [
        ("GET", "/nowhere", {}, 404),
        ("DELETE", "/models", {}, 405),
        (
            "POST",
            "/models/odd/predict",
            {"content": b"not json", "headers": {"Content-Type": "application/json"}},
            422,
        ),
        ("POST", "/models/odd/predict", {"json": {"inputs": [[0.0] * 64], "version": 2**40}}, 422),
        ("GET", f"/models/odd/versions/{2**70}/weights", {}, 422),
        ("GET", "/models/odd%00x", {}, 404),
        (
            "POST",
            "/models",
            {
                "json": {"id": "x" * 8, "architecture": "digits-mlp", "description": "a\x00b"},
                "headers": auth,
            },
            422,
        ),
        ("POST", "/models/odd/predict", {"json": {"inputs": [[1e39] * 64]}}, 422),
        (
            "POST",
            "/models/odd/predict",
            {"content": b"[" * 5_000_000, "headers": {"Content-Type": "application/json"}},
            413,
        ),
        ("GET", "/models", {"headers": {"Authorization": f"Basic {node.tokens['both']}"}}, 401),
        (
            "POST",
            "/models/odd/versions",
            {"content": iter([b"\x01" * 30_000] * 3), "headers": auth},
            413,
        ),  # chunked: no length given
    ]
    for method, path, kwargs, status in cases:
        response = httpx.request(method, node.url + path, timeout=30, **kwargs)
        assert response.status_code == status, (path, response.text[:200])
        body = response.json()
        assert set(body) >= {"error", "hint"}, body


def test_a_client_of_another_protocol_is_told_both_versions(node):
    response = httpx.get(node.url + "/models", headers={"OM-Teach-Protocol": "7"})
    assert response.status_code == 426
    body = response.json()
    assert (body["node_protocol"], body["client_protocol"]) == ("1", "7") and body["hint"]


class _Trap:
    """Unpickling this creates the file at ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_is_never_unpickled(node, tmp_path):
    trap = tmp_path / "pickle-ran"
    c = client(node)
    c.create_model("trap", "digits-mlp")
    as_pickle = pickle.dumps({"0.weight": _Trap(str(trap))})
    zip_path = tmp_path / "weights.pt"
    torch.save({"0.weight": _Trap(str(trap))}, zip_path)
    for payload in (as_pickle, zip_path.read_bytes()):
        error = _status(lambda p=payload: c.upload("trap", p))
        assert error.status == 422 and "never accepted" in error.hint
    assert not trap.exists()
    pickle.loads(as_pickle)  # the payload is real: unpickled here, it does create the file
    assert trap.exists()


def test_a_tampered_download_is_refused_by_the_client(node):
    c = client(node)
    c.create_model("verified", "digits-mlp")
    c.upload("verified", weights(0))

    def flip(request: httpx.Request) -> httpx.Response:
        with httpx.Client() as real:
            response = real.send(request)
            content = response.read()
        if request.url.path.endswith("/weights"):
            content = content[:-1] + bytes([content[-1] ^ 1])
        return httpx.Response(response.status_code, headers=response.headers, content=content)

    meddled = client(node, transport=httpx.MockTransport(flip))
    with pytest.raises(DownloadMismatch, match="do not use them"):
        meddled.download("verified", 1)


def test_two_hundred_concurrent_predictions_all_answer_correctly(node):
    c = client(node)
    c.create_model("busy", "digits-mlp", public=True)
    c.upload("busy", weights(3))
    rows = np.random.default_rng(1).random((200, 64))
    want = mlp(3)(torch.tensor(rows, dtype=torch.float32)).detach().numpy()
    shared = client(node, None)

    def ask(i: int) -> list[float]:
        return shared.predict("busy", rows[i : i + 1])["outputs"][0]

    with ThreadPoolExecutor(max_workers=50) as pool:
        got = np.array(list(pool.map(ask, range(200))))
    assert np.allclose(got, want, atol=1e-6)


def test_kill_during_uploads_loses_nothing_acknowledged(tmp_path):
    """Uploads race a SIGKILL; after a restart every acknowledged version is there with its
    content address, and every version served downloads whole."""
    tokens = prepare(tmp_path)
    node = NodeProcess(tmp_path)
    node.start()
    setup = NodeClient(node.url, tokens["both"])
    setup.create_model("crash", "digits-mlp")
    acknowledged, lock = [], threading.Lock()

    def upload(seed: int) -> None:
        try:
            with NodeClient(node.url, tokens["both"], retries=0) as c:
                result = c.upload("crash", weights(seed))
        except (ConnectionError, NodeRequestError):
            return
        with lock:
            acknowledged.append(result)

    threads = [threading.Thread(target=upload, args=(seed,)) for seed in range(60)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 10 and time.monotonic() < deadline:
        time.sleep(0.005)
    node.kill()
    for t in threads:
        t.join()
    assert 10 <= len(acknowledged) < 60
    node.start()
    try:
        c = NodeClient(node.url, tokens["both"])
        served = {v["version"]: v["cid"] for v in c.model("crash")["versions"]}
        for result in acknowledged:
            assert served[result["version"]] == result["cid"]
        for version in served:
            c.download("crash", version)  # whole, and hashing to its address
        assert len(set(served.values())) == len(served)
    finally:
        node.stop()
