"""Privacy protections: generalization to k-anonymity now; differential privacy later."""
