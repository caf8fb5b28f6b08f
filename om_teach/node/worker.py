"""A model-centric FL worker: ask the node for a place in a cycle, fetch the cycle's committed
version and check it by content address, train it on local rows, and report: the weights in a
plain cycle, or, with secure aggregation, its masked change through the four rounds of
:mod:`om_teach.node.secagg`."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from om_teach.crypto.secagg import (
    AdvertisedKeys,
    Client,
    EncryptedShares,
    SecAggError,
    UnmaskRequest,
)
from om_teach.fl.client import get_params, local_train
from om_teach.fl.secure import encode_change
from om_teach.fl.strategy import flatten
from om_teach.node.client import NodeClient
from om_teach.node.secagg import b64, context

POLL_SECONDS = (0.02, 0.4)  # the first wait between two polls, and the longest


def _train(client: NodeClient, place: dict, X: np.ndarray, y: np.ndarray, seed: int):
    """The cycle's model, checked against the place's CID, before and after local training,
    and the examples it saw."""
    network = client.load(place["model"], place["version"], expected_cid=place["cid"])
    before = get_params(network)
    config = place["client_config"]
    local_train(
        network,
        X,
        y,
        learning_rate=config["learning_rate"],
        batch_size=config["batch_size"],
        steps=config["local_steps"],
        rng=np.random.default_rng(seed),
    )
    examples = min(len(X) * config["local_steps"], config["batch_size"] * config["local_steps"])
    return network, before, examples


def train_one_cycle(
    client: NodeClient, process_id: int, X: np.ndarray, y: np.ndarray, *, seed: int = 0
) -> dict:
    """One plain cycle's work for this worker: the node's answer to its report, or the
    rejection."""
    place = client.cycle_request(process_id)
    if place["status"] != "accepted":
        return place
    network, _, examples = _train(client, place, X, y, seed)
    return client.report(place["request_key"], network, examples)


def train_one_secure_cycle(
    client: NodeClient,
    process_id: int,
    X: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    drop_after: str | None = None,
    bind_commitment: bool = True,
    timeout: float = 120.0,
) -> dict:
    """One secure cycle's work for this worker: train, then send the masked change through the
    rounds, each with what the node relayed. Returns the cycle's end as this worker saw it:
    ``closed`` (with the published version), ``failed`` (with the node's reason), ``aborted``
    (this worker refused to go on, and says why), ``dropped`` (``drop_after`` names the round
    after which it went silent, to show recovery), or the node's rejection of its request.

    ``bind_commitment=False`` leaves the model's CID out of the masks and shares: only to show
    the model-inconsistency attack that the binding stops.
    """
    place = client.cycle_request(process_id)
    if place["status"] != "accepted":
        return place
    network, before, examples = _train(client, place, X, y, seed)
    settings = place["secure_aggregation"]
    vector = encode_change(
        flatten(get_params(network)) - flatten(before),
        examples,
        max_examples=settings["max_examples"],
        clipping_range=settings["clipping_range"],
        target_range=settings["target_range"],
    )
    me = Client(
        settings["client_id"],
        vector,
        threshold=settings["threshold"],
        bits=settings["bits"],
        round_id=place["cycle"],
        context=context(process_id, place["cycle"], place["cid"]) if bind_commitment else b"",
    )
    key = place["request_key"]
    session = _Rounds(client, key, place["cycle"], timeout)
    try:
        keys = me.advertise_keys()
        session.send("keys", {"c_pk": b64(keys.c_pk), "s_pk": b64(keys.s_pk)})
        if drop_after == "keys":
            return session.gone("keys")
        roster = session.wait("roster")
        shares = me.share_keys(
            [
                AdvertisedKeys(
                    k["client_id"], base64.b64decode(k["c_pk"]), base64.b64decode(k["s_pk"])
                )
                for k in roster
            ]
        )
        session.send(
            "shares",
            {"shares": [{"receiver": s.receiver, "ciphertext": b64(s.ciphertext)} for s in shares]},
        )
        if drop_after == "shares":
            return session.gone("shares")
        inbox = session.wait("inbox")
        masked = me.masked_input(
            [
                EncryptedShares(m["sender"], m["receiver"], base64.b64decode(m["ciphertext"]))
                for m in inbox
            ]
        )
        session.send("masked", masked.vector.astype("<u4").tobytes())
        if drop_after == "masked":
            return session.gone("masked")
        request = session.wait("request")
        response = me.unmask(UnmaskRequest(tuple(request["survivors"]), tuple(request["dropped"])))
        session.send(
            "unmask",
            {
                "b": {str(v): str(s.y[0]) for v, s in response.b_shares.items()},
                "sk": {str(v): str(s.y[0]) for v, s in response.sk_shares.items()},
            },
        )
        return session.wait(None)
    except SecAggError as err:
        session.send("abort", {"reason": str(err)[:300]})
        return {"status": "aborted", "cycle": place["cycle"], "reason": str(err)}
    except _Ended as ended:
        return ended.state


def run_workers(
    url: str,
    tokens: Sequence[str],
    process_id: int,
    shards: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    seed: int = 0,
    drop_after: dict[int, str] | None = None,
) -> list[dict]:
    """One secure cycle of ``len(shards)`` workers at once, worker i with ``tokens[i]`` and
    ``shards[i]`` in a thread of its own (as separate devices would be); ``drop_after`` maps a
    worker to the round after which it goes silent. Each worker's end of the cycle, in order."""
    drop_after = drop_after or {}

    def work(i: int) -> dict:
        with NodeClient(url, tokens[i]) as client:
            X, y = shards[i]
            return train_one_secure_cycle(
                client, process_id, X, y, seed=seed + i, drop_after=drop_after.get(i)
            )

    with ThreadPoolExecutor(max_workers=len(shards)) as pool:
        return list(pool.map(work, range(len(shards))))


def _end(state: dict) -> dict:
    return {k: state.get(k) for k in ("status", "cycle", "published", "reason")}


class _Ended(Exception):
    """The cycle ended (closed or failed) before the round this worker waits for."""

    def __init__(self, state: dict) -> None:
        super().__init__(state.get("reason"))
        self.state = state


class _Rounds:
    """One place's exchanges with the node: send a round's message, poll for the next."""

    def __init__(self, client: NodeClient, key: str, cycle: int, timeout: float) -> None:
        self.client, self.key, self.cycle, self.timeout = client, key, cycle, timeout

    def send(self, round: str, message: dict | bytes) -> None:
        self.client.secagg_send(self.key, round, message)

    def wait(self, field: str | None):
        """What the node relays in ``field`` once it is there. :class:`_Ended` when the cycle
        ends first, or the node left this worker out of a round (``excluded``); with None,
        always, at the cycle's end."""
        deadline, pause = time.monotonic() + self.timeout, POLL_SECONDS[0]
        while time.monotonic() < deadline:
            state = self.client.secagg_state(self.key, field)
            if field is not None and field in state:
                return state[field]
            if "left_out_of" in state:
                raise _Ended(
                    {**_end(state), "status": "excluded", "left_out_of": state["left_out_of"]}
                )
            if state["status"] != "open":
                raise _Ended(_end(state))
            time.sleep(pause)
            pause = min(pause * 1.5, POLL_SECONDS[1])
        raise SecAggError(f"the node relayed no {field or 'result'} within {self.timeout} s")

    def gone(self, after: str) -> dict:
        return {"status": "dropped", "cycle": self.cycle, "after": after}
