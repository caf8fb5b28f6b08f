"""Cryptographic protocols of the course: Paillier vectors, secret sharing, SMPC and secure
aggregation."""
