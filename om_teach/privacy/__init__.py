"""Privacy protections, one module each: ``anonymity`` (k-anonymity), ``mechanisms`` (Laplace
and Gaussian), ``updates`` (clipped, noised updates for federated learning), ``dpsgd`` (DP-SGD
through opacus) and ``accounting`` (RDP accounting through opacus).

Nothing is imported here: ``accounting`` and ``dpsgd`` load opacus and so torch (seconds and
hundreds of MB), which a notebook that only needs k-anonymity should not pay for.
"""
