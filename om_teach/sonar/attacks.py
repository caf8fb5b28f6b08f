"""Attacks a cheating data scientist makes on Helium, run against an in-process federation.

Each attack is what the course's review ran against the platform before its defences, written
so that the same code runs with the defences on (``in_process(helium=True)``) and off
(``pinned=False``: mines take the key the bundle names; ``sealed=False``: bare ciphertexts from
any address count). The attacker controls the scientist: it writes bundles, posts models,
funds extra addresses, and reads everything on the store and the chain.

- :func:`substitute_key`: post a model whose bundle names the scientist's own Paillier key,
  then decrypt each mine's gradient. Pinned mines refuse the model.
- :func:`sybil_copy`: resubmit a victim's contribution, re-encoded so that its CID differs,
  from extra addresses: the release then weighs the victim several times. Unadmitted
  addresses count for nothing, and a sealed box opens only in its own mine's context.
- :func:`cancel_others`: submit the homomorphic negation of the other mines' ciphertexts, so
  that the round's sum is the victim's gradient alone. Sealed ciphertexts cannot be read.
- :func:`difference_releases`: re-post the same model when a mine drops out and subtract the
  two releases. No defence stops this one: k protects one release only; across releases only
  the noise and its accounting (ε) bound what it reveals, and at z = 0 nothing does.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from om_teach.crypto.paillier import EncryptedVector, generate_keypair
from om_teach.privacy.updates import clip
from om_teach.sonar.model import ModelBundle, canonical_json, gradient
from om_teach.sonar.scientist import LocalKeyAggregator

if TYPE_CHECKING:
    from om_teach.sonar.capsule import Aggregate
    from om_teach.sonar.mine import Mine
    from om_teach.sonar.platform import Federation

BOUNTY = 10**17


class AttackFailed(Exception):
    """The attacker could not even mount the attack; the message says what stopped it."""


def true_gradient(mine: Mine, bundle: ModelBundle) -> np.ndarray:
    """What an honest mine contributes for ``bundle``: its clipped gradient (for checking)."""
    g = gradient(mine.X, mine.y, np.array(bundle.weights), bundle.bias)
    return clip(g, clip_norm=bundle.clip_norm)


def _bare(data: bytes) -> dict | None:
    """A stored contribution as a bare ciphertext's dict, or None if the attacker cannot read
    one out of it (it is sealed)."""
    raw = json.loads(data)
    return raw if isinstance(raw, dict) and "ciphertexts" in raw else None


def _repost(federation: Federation, bundle: ModelBundle, mines: list[Mine]) -> int:
    """Post ``bundle`` as a new model, bound to the federation's capsule as the honest one
    is, and point ``mines`` at it; the new model's id."""
    scientist = federation.scientist
    record = scientist.capsule
    model_id, _ = federation.repository.post_model(
        federation.store.put(bundle.to_bytes()),
        bounty=BOUNTY,
        initial_error=scientist.evaluate(bundle),
        target_error=0.0,
        sender=scientist.account,
        capsule=None if record is None else record.signer,
        capsule_record=None if record is None else record.fingerprint,
    )
    for mine in mines:
        mine.model_id, mine.submitted = model_id, {}
    return model_id


def substitute_key(
    federation: Federation, *, key_bits: int = 1024
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The scientist names its own key in a new model's bundle and asks every mine to train
    it. Returns each mine's gradient it decrypted, and each mine's refusal."""
    public, private = generate_keypair(key_bits)
    scientist = federation.scientist
    scientist.aggregator = LocalKeyAggregator(
        federation.repository, federation.store, keypair=(public, private)
    )
    bundle = replace(scientist.bundle, public_key_n=public.n, round=0)
    model_id = _repost(federation, bundle, federation.mines)
    recovered, refused = {}, {}
    for mine in federation.mines:
        try:
            cid = mine.step()
        except ValueError as error:
            refused[mine.account] = str(error)
            continue
        vector = EncryptedVector.from_dict(json.loads(federation.store.get(cid)))
        if vector.public_key.n == public.n:
            recovered[mine.account] = vector.decrypt(private)
    assert federation.repository.current_round(model_id) == 0
    return recovered, refused


def _open_round(federation: Federation, extra: int) -> int:
    """Re-post the scientist's model with room for ``extra`` more summands (the scientist
    writes the bundle) and have every mine submit to it; the new model's id."""
    bundle = federation.scientist.bundle
    room = replace(bundle, round=0, max_summands=bundle.max_summands + extra)
    model_id = _repost(federation, room, federation.mines)
    for mine in federation.mines:
        mine.step()
    return model_id


def sybil_copy(federation: Federation, victim: int, sybils: list[str]) -> Aggregate:
    """Every mine submits; then each of ``sybils`` resubmits the victim's contribution,
    re-encoded so its CID differs. Returns the capsule's release of the round."""
    repository, store = federation.repository, federation.store
    model_id, round = _open_round(federation, len(sybils)), 0
    cids = {mine.account: mine.submitted[round] for mine in federation.mines}
    data = store.get(cids[federation.mines[victim].account])
    for i, sybil in enumerate(sybils):
        bare = _bare(data)
        if bare is not None:
            vector = EncryptedVector.from_dict(bare).rerandomized()
            copy = canonical_json(vector.to_dict())
        else:  # sealed: the same box, re-encoded so that its CID differs
            copy = json.dumps(json.loads(data), indent=i + 1).encode()
        repository.submit_gradient(model_id, round, store.put(copy), sender=sybil)
    return federation.capsule.aggregate(model_id, round)


def cancel_others(federation: Federation, victim: int, attacker: str) -> Aggregate:
    """Every mine submits; then ``attacker`` submits Enc((m+1)·offset) times the inverse of
    the m other mines' ciphertexts, so the round's sum holds the victim's gradient alone.
    AttackFailed if the other ciphertexts cannot be read."""
    repository, store = federation.repository, federation.store
    model_id, round = _open_round(federation, 1), 0
    cids = {mine.account: mine.submitted[round] for mine in federation.mines}
    victim_account = federation.mines[victim].account
    others = [_bare(store.get(cid)) for account, cid in cids.items() if account != victim_account]
    if any(bare is None for bare in others):
        raise AttackFailed("the other mines' contributions are sealed: no ciphertext to negate")
    vectors = [EncryptedVector.from_dict(bare) for bare in others]
    key, layout, length = vectors[0].public_key, vectors[0].layout, vectors[0].length
    offsets = layout.pack([(len(vectors) + 1) * layout.offset] * length)
    ciphertexts = []
    for j, plaintext in enumerate(offsets):
        c = key.raw_encrypt(plaintext)
        for vector in vectors:
            c = c * pow(vector.ciphertexts[j], -1, key.nsquare) % key.nsquare
        ciphertexts.append(c)
    forged = EncryptedVector(key, ciphertexts, length=length, layout=layout, count=1)
    cid = store.put(canonical_json(forged.to_dict()))
    repository.submit_gradient(model_id, round, cid, sender=attacker)
    return federation.capsule.aggregate(model_id, round)


def difference_releases(federation: Federation, victim: int) -> tuple[np.ndarray, list[Aggregate]]:
    """Release a round with every mine, re-post the same model, release it again without the
    victim, and subtract. Returns the estimate of the victim's gradient and both releases."""
    capsule, scientist = federation.capsule, federation.scientist
    bundle = replace(scientist.bundle, round=0)
    releases = []
    for mines in (federation.mines, federation.mines[:victim] + federation.mines[victim + 1 :]):
        model_id = _repost(federation, bundle, federation.mines)
        for mine in mines:
            mine.step()
        releases.append(capsule.aggregate(model_id, 0))
    return releases[0].sum - releases[1].sum, releases
