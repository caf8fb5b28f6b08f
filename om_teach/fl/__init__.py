"""Federated learning: server strategies (FedAvg, FedAdam, FedYogi); local training,
simulation and DP-FedAvg to come."""
