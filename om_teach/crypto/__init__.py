"""Cryptographic protocols of the course: Paillier vectors, secret sharing, SMPC, secure aggregation."""
