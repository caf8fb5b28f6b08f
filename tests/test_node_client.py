"""The node's client on its own: it retries what is transient with growing delays, gives up
with a clear error, and never retries a refusal."""

from __future__ import annotations

import httpx
import pytest

from om_teach.node.client import NodeClient, NodeRequestError


def _scripted(statuses: list[int | str]):
    """A transport that answers each request with the next scripted status (or drops the
    connection for "error"), and records when each request came."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        outcome = statuses[len(calls)]
        calls.append(request.url.path)
        if outcome == "error":
            raise httpx.ConnectError("connection refused", request=request)
        body = {"error": f"status {outcome}", "hint": "scripted"} if outcome >= 400 else {}
        return httpx.Response(outcome, json=body or {"protocol": "1", "schema": "0002"})

    return httpx.MockTransport(handler), calls


def test_transient_failures_are_retried_until_an_answer(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("om_teach.node.client.time.sleep", sleeps.append)
    transport, calls = _scripted(["error", 503, 502, 200])
    client = NodeClient("http://node.test", retries=4, backoff=0.1, transport=transport)
    assert client.protocol()["protocol"] == "1"
    assert len(calls) == 4 and sleeps == [0.1, 0.2, 0.4]


def test_a_refusal_is_not_retried_and_keeps_the_nodes_words(monkeypatch):
    monkeypatch.setattr("om_teach.node.client.time.sleep", lambda s: None)
    transport, calls = _scripted([403, 200])
    client = NodeClient("http://node.test", transport=transport)
    with pytest.raises(NodeRequestError) as info:
        client.models()
    assert len(calls) == 1
    assert (info.value.status, info.value.error, info.value.hint) == (403, "status 403", "scripted")


def test_giving_up_names_the_node(monkeypatch):
    monkeypatch.setattr("om_teach.node.client.time.sleep", lambda s: None)
    transport, calls = _scripted(["error"] * 3)
    client = NodeClient("http://node.test", retries=2, transport=transport)
    with pytest.raises(ConnectionError, match=r"the node at http://node\.test did not answer"):
        client.models()
    assert len(calls) == 3
    transport, calls = _scripted([504] * 3)
    with pytest.raises(NodeRequestError) as info:
        NodeClient("http://node.test", retries=2, transport=transport).models()
    assert info.value.status == 504 and len(calls) == 3
