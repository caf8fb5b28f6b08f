"""Judges for the model-hosting module's exercises: the node's access rule, checking a
download against its content address, and FedAvg's step from a securely aggregated sum."""

from __future__ import annotations

from collections.abc import Callable

from om_teach.exercises import exercise


@exercise("hosting.authorize")
def judge_authorize(authorize: Callable) -> str | None:
    """``authorize(public, scopes, action)``: the status the node answers (200, 401 or 403)."""
    cases = [
        (True, None, "read", 200),
        (False, None, "read", 401),
        (False, {"read"}, "read", 200),
        (False, {"upload"}, "read", 403),
        (True, None, "upload", 401),
        (True, {"read"}, "upload", 403),
        (False, {"read", "upload"}, "upload", 200),
        (False, {"admin"}, "read", 200),
        (True, {"admin"}, "upload", 200),
        (False, {"train"}, "read", 403),
        (True, {"train"}, "read", 200),
    ]
    for public, scopes, action, expected in cases:
        got = authorize(public, None if scopes is None else set(scopes), action)
        if got == expected:
            continue
        if scopes is None and expected == 401:
            return (
                "no token at all is 401 (authenticate), not 403; a public model is the only "
                "exception, and only for reading."
            )
        if scopes is None and expected == 200:
            return "anyone may read a public model, with or without a token."
        if "admin" in scopes:
            return "an admin token holds every scope."
        if expected == 403:
            return (
                "a token without the scope the action needs is 403 (forbidden): the caller is "
                "known, but not allowed."
            )
        return "public opens reading only; uploading always needs the upload scope."
    return None


@exercise("hosting.verify_download")
def judge_verify_download(verify_download: Callable) -> str | None:
    """``verify_download(data, listed_cid)``: whether the bytes are the content named."""
    from om_teach.storage.cid import cid_of

    good = b"weights " * 1000
    cases = [
        (good, cid_of(good), True),
        (good[:-1] + b"?", cid_of(good), False),
        (good + b"\x00", cid_of(good), False),
        (b"", cid_of(b""), True),
        (b"other", cid_of(good), False),
        (
            bytes(range(256)) * 2000,
            cid_of(bytes(range(256)) * 2000),
            True,
        ),  # past one 256 KiB block
    ]
    for data, cid, expected in cases:
        got = verify_download(data, cid)
        if not isinstance(got, bool):
            return "return True or False."
        if got != expected:
            if expected:
                return (
                    "compute the bytes' content address the way the node names them: "
                    "om_teach.storage.cid.cid_of."
                )
            return (
                "compare the address of the bytes you received with the address the node "
                "listed, not anything the download itself claims."
            )
    return None


@exercise("hosting.secure_step")
def judge_secure_step(secure_step: Callable) -> str | None:
    """``secure_step(total, survivors, max_examples, clipping_range, target_range)``: FedAvg's
    step from the unmasked sum of the survivors' weighted, quantized changes and counts."""
    import numpy as np

    from om_teach.crypto.secagg import to_ring
    from om_teach.fl.secure import decode_sum, encode_change

    rng = np.random.default_rng(7)
    for survivors, max_examples, clipping, target in [(3, 24, 1.0, 1 << 16), (7, 5, 0.5, 1 << 20)]:
        counts = [int(n) for n in rng.integers(1, max_examples + 1, size=survivors)]
        inputs = [
            encode_change(
                rng.normal(0, 0.05, 12),
                n,
                max_examples=max_examples,
                clipping_range=clipping,
                target_range=target,
                rng=rng,
            )
            for n in counts
        ]
        total = np.sum([to_ring(v) for v in inputs], axis=0, dtype=np.uint64) % (1 << 32)
        want = decode_sum(total, survivors, max_examples=max_examples, clipping_range=clipping,
                          target_range=target)  # fmt: skip
        got = np.asarray(
            secure_step(total.copy(), survivors, max_examples, clipping, target), dtype=float
        )
        if got.shape != want.shape:
            return (
                f"return one step per parameter ({want.shape[0]} here): the sum's last element "
                "is the example count, not a parameter."
            )
        if np.allclose(got, want, atol=1e-9):
            continue
        dequantized = total[:-1] * (2 * clipping / target) - survivors * clipping
        if np.allclose(got, dequantized * max_examples / survivors, atol=1e-9):
            return (
                "FedAvg weighs by examples: divide by the summed example count (the sum's last "
                "element), not by the number of survivors."
            )
        shifted = total[:-1] * (2 * clipping / target) * max_examples / int(total[-1])
        if np.allclose(got, shifted, atol=1e-9):
            return (
                "each survivor's quantized value starts at -clipping_range, not 0: subtract "
                "survivors × clipping_range from the dequantized sum."
            )
        return (
            "dequantize the sum (× 2·clipping_range / target_range, less survivors × "
            "clipping_range), then scale by max_examples / the summed example count."
        )
    return None
