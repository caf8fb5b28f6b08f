"""Judges for the model-hosting module's exercises: the node's access rule, and checking a
download against its content address."""

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
