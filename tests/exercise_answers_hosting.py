"""Reference and wrong answers to the model-hosting notebook's self-checks."""

from __future__ import annotations

import hashlib

from om_teach.storage.cid import cid_of


def authorize(public, scopes, action):
    if action == "read" and public:
        return 200
    if scopes is None:
        return 401
    return 200 if action in scopes or "admin" in scopes else 403


def authorize_403_without_token(public, scopes, action):
    """Wrong: a missing token is not a forbidden one."""
    status = authorize(public, scopes, action)
    return 403 if status == 401 else status


def authorize_public_uploads(public, scopes, action):
    """Wrong: public opens reading, not uploading."""
    return 200 if public else authorize(public, scopes, action)


def verify_download(data, listed_cid):
    return cid_of(data) == listed_cid


def verify_sha256(data, listed_cid):
    """Wrong: a bare SHA-256 is not how the node names content."""
    return hashlib.sha256(data).hexdigest() == listed_cid


def verify_always(data, listed_cid):
    """Wrong: trusts whatever arrived."""
    return True


REFERENCE = {"hosting.authorize": authorize, "hosting.verify_download": verify_download}
WRONG = {
    "hosting.authorize": [authorize_403_without_token, authorize_public_uploads],
    "hosting.verify_download": [verify_sha256, verify_always],
}
