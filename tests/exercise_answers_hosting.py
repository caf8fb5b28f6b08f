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


def secure_step(total, survivors, max_examples, clipping_range, target_range):
    weighted = total[:-1] * (2 * clipping_range / target_range) - survivors * clipping_range
    return weighted * max_examples / int(total[-1])


def secure_step_no_offset(total, survivors, max_examples, clipping_range, target_range):
    """Wrong: forgets that each quantized value starts at -clipping_range."""
    return total[:-1] * (2 * clipping_range / target_range) * max_examples / int(total[-1])


def secure_step_per_survivor(total, survivors, max_examples, clipping_range, target_range):
    """Wrong: averages over survivors, not over examples."""
    weighted = total[:-1] * (2 * clipping_range / target_range) - survivors * clipping_range
    return weighted * max_examples / survivors


REFERENCE = {
    "hosting.authorize": authorize,
    "hosting.verify_download": verify_download,
    "hosting.secure_step": secure_step,
}
WRONG = {
    "hosting.authorize": [authorize_403_without_token, authorize_public_uploads],
    "hosting.verify_download": [verify_sha256, verify_always],
    "hosting.secure_step": [secure_step_no_offset, secure_step_per_survivor],
}
