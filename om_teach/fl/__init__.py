"""Federated learning: server strategies (FedAvg, FedAdam, FedYogi), local training of torch
models, in-process simulation, and DP-FedAvg with the noise at the server or at the clients."""
