"""Attacks the course runs against unprotected releases and shared gradients, to show what a
defence must stop: record linkage, gradient leakage."""
