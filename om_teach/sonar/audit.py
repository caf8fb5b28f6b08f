"""What a party can reach: the private keys held by an object graph.

The course's claim "the scientist never holds a private key" is checked by walking every
object reachable from the scientist's attributes and collecting the private keys it finds:
Paillier keys (phe), X25519, Ed25519 and elliptic-curve keys (cryptography) and Ethereum
accounts (eth-account). A Hydrogen scientist holds one in its aggregator; a Helium scientist
holds none; a scientist that substituted its own Paillier key for the capsule's holds that one,
so the same walk catches key substitution.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from eth_account.signers.local import LocalAccount
from phe import PaillierPrivateKey

PRIVATE_KEY_TYPES = (
    PaillierPrivateKey,
    x25519.X25519PrivateKey,
    ed25519.Ed25519PrivateKey,
    ec.EllipticCurvePrivateKey,
    LocalAccount,
)
_CONTAINERS = (list, tuple, set, frozenset)


def reachable_private_keys(root: object) -> list[Any]:
    """Every private key reachable from ``root`` through attributes, dicts and sequences of
    om_teach's and Python's own objects (a library's internals are not walked into)."""
    stack, seen, found = [root], set(), []
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, PRIVATE_KEY_TYPES):
            found.append(obj)
        elif isinstance(obj, dict):
            stack += [*obj.keys(), *obj.values()]
        elif isinstance(obj, _CONTAINERS):
            stack += list(obj)
        elif type(obj).__module__.startswith("om_teach"):
            stack += list(getattr(obj, "__dict__", {}).values())
            stack += [getattr(obj, name) for name in getattr(type(obj), "__slots__", ())]
    return found
