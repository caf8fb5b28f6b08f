"""Flower's half of bench_flower.py, run by build/flower/bin/python (Flower cannot share the
project's venv): FedAvg on the workload that bench_flower.py saved, with the same model, initial
weights, local SGD steps and data, either in Flower's Ray simulation (``simulation``) or served
(``served``: ``flwr.server.start_server`` on 127.0.0.1 and one ``flwr.client.start_client`` per
client, each a thread of this process on its own gRPC connection). Prints one JSON line."""

import json
import socket
import sys
import threading
import time

import flwr
import numpy as np
import torch
from flwr.client import NumPyClient, start_client
from flwr.server import ServerConfig, start_server
from flwr.server.strategy import FedAvg
from flwr.simulation import start_simulation
from torch import nn


def network() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def set_weights(model: nn.Module, weights) -> None:
    keys = list(model.state_dict())
    model.load_state_dict({k: torch.as_tensor(w) for k, w in zip(keys, weights, strict=True)})


def main() -> None:
    workload = np.load(sys.argv[1])
    config = json.loads(str(workload["config"]))
    shards = [(workload[f"X{i}"], workload[f"y{i}"]) for i in range(config["clients"])]
    initial = [workload[f"w{i}"] for i in range(4)]

    class Client(NumPyClient):
        def __init__(self, cid: int) -> None:
            self.X, self.y = shards[cid]
            self.rng = np.random.default_rng(cid)

        def fit(self, parameters, _config):
            torch.set_num_threads(1)
            model = network()
            set_weights(model, parameters)
            optimizer = torch.optim.SGD(model.parameters(), lr=config["learning_rate"])
            for _ in range(config["steps"]):
                rows = self.rng.choice(len(self.X), config["batch_size"], replace=False)
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(
                    model(torch.as_tensor(self.X[rows])), torch.as_tensor(self.y[rows])
                )
                loss.backward()
                optimizer.step()
            return [v.detach().numpy() for v in model.state_dict().values()], len(self.X), {}

    def client_fn(context):
        return Client(int(context.node_config["partition-id"])).to_client()

    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

    class KeepFinal(FedAvg):
        final = None

        def aggregate_fit(self, server_round, results, failures):
            parameters, metrics = super().aggregate_fit(server_round, results, failures)
            KeepFinal.final = parameters
            return parameters, metrics

    strategy = KeepFinal(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=config["clients"],
        min_available_clients=config["clients"],
        initial_parameters=ndarrays_to_parameters(initial),
    )
    if sys.argv[2] == "served":
        seconds = serve(shards, Client, config, strategy)
    else:
        start = time.perf_counter()
        start_simulation(
            client_fn=client_fn,
            num_clients=config["clients"],
            config=ServerConfig(num_rounds=config["rounds"]),
            strategy=strategy,
            client_resources={"num_cpus": 1},
            ray_init_args={"num_cpus": 2, "include_dashboard": False, "log_to_driver": False},
        )
        seconds = time.perf_counter() - start
    model = network()
    set_weights(model, parameters_to_ndarrays(KeepFinal.final))
    with torch.no_grad():
        predicted = model(torch.as_tensor(workload["X_test"])).argmax(1).numpy()
    accuracy = float(np.mean(predicted == workload["y_test"]))
    print(json.dumps({"seconds": seconds, "accuracy": accuracy, "flwr": flwr.__version__}))


def serve(shards, client_class, config, strategy) -> float:
    """Flower's server on a free loopback port (in the main thread: it installs signal
    handlers), and every client on its own connection, started once the server listens; the
    seconds from the clients' start to the server's last round."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    started = []

    def clients() -> None:
        time.sleep(1.0)  # the gRPC server binds first
        started.append(time.perf_counter())
        for i in range(len(shards)):
            threading.Thread(
                target=start_client,
                kwargs={
                    "server_address": address,
                    "client": client_class(i).to_client(),
                    "insecure": True,
                },
                daemon=True,
            ).start()

    threading.Thread(target=clients, daemon=True).start()
    start_server(
        server_address=address, config=ServerConfig(num_rounds=config["rounds"]), strategy=strategy
    )
    return time.perf_counter() - started[0]


if __name__ == "__main__":
    main()
