"""A model-centric FL worker: ask the node for a place in a cycle, fetch the cycle's committed
version and check it by content address, train it on local rows, report the weights."""

from __future__ import annotations

import numpy as np

from om_teach.fl.client import local_train
from om_teach.node.client import NodeClient


def train_one_cycle(
    client: NodeClient, process_id: int, X: np.ndarray, y: np.ndarray, *, seed: int = 0
) -> dict:
    """One cycle's work for this worker: the node's answer to its report, or the rejection."""
    place = client.cycle_request(process_id)
    if place["status"] != "accepted":
        return place
    network = client.load(place["model"], place["version"], expected_cid=place["cid"])
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
    return client.report(place["request_key"], network, examples)
