"""Helium against a scientist who cheats: each attack succeeds with its defence off and fails
with it on (om_teach.sonar.attacks), and the residual trust is shown as what it is.

The attacker controls the scientist's code, funds extra addresses, reads every byte on the
store and the chain, and on anvil impersonates any address (``anvil_impersonateAccount``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from phe import PaillierPrivateKey

from om_teach.crypto.paillier import EncryptedVector
from om_teach.privacy.accounting import epsilon
from om_teach.sonar import attacks
from om_teach.sonar.audit import reachable_private_keys
from om_teach.sonar.chain import Chain
from om_teach.sonar.contract import ContractRevert
from om_teach.sonar.contribution import Context, seal, verify_key_hex
from om_teach.sonar.model import canonical_json
from om_teach.sonar.platform import Settings, in_process

from .conftest import require_anvil

MINES = 4
SMALL = Settings(mines=MINES, key_bits=1024, clip_norm=1.0, learning_rate=0.2)
DEFENCES = {"off": {"pinned": False, "sealed": False}, "on": {}}


def federation(defences: str, **options):
    return in_process(SMALL, helium=True, **DEFENCES[defences], **options)


def truths(fed) -> list[np.ndarray]:
    bundle = fed.scientist.bundle
    return [attacks.true_gradient(mine, bundle) for mine in fed.mines]


@pytest.mark.parametrize("defences", ["off", "on"])
def test_key_substitution(defences):
    """A scientist that names its own Paillier key in a bundle decrypts every unpinned mine's
    gradient; pinned mines refuse the model, naming it and the key, and encrypt nothing."""
    fed = federation(defences)
    expected = {mine.account: g for mine, g in zip(fed.mines, truths(fed), strict=True)}
    recovered, refused = attacks.substitute_key(fed)
    if defences == "off":
        assert recovered.keys() == expected.keys() and not refused
        for account, g in recovered.items():
            np.testing.assert_allclose(g, expected[account], atol=1e-6)
    else:
        assert recovered == {} and refused.keys() == expected.keys()
        assert all("bundle names the Paillier key" in message for message in refused.values())
        assert all("model 1" in message for message in refused.values())
    # Either way, the audit finds the substituted key in the scientist's hands.
    [key] = reachable_private_keys(fed.scientist)
    assert isinstance(key, PaillierPrivateKey)


def test_a_model_bound_to_another_capsule_is_refused():
    """A pinned mine refuses a model whose on-chain entry names no capsule or another one."""
    fed = federation("on")
    mine = fed.mines[0]
    model_id, _ = fed.repository.post_model(
        fed.store.put(fed.scientist.bundle.to_bytes()),
        bounty=10**17,
        initial_error=1.0,
        target_error=0.0,
        sender=fed.scientist.account,
    )
    mine.model_id = model_id
    with pytest.raises(ValueError, match=f"model {model_id} is bound on chain to capsule None"):
        mine.step()


@pytest.mark.parametrize("defences", ["off", "on"])
def test_sybil_copy(defences):
    """Two extra addresses resubmit a victim's re-encoded contribution. Off: the release
    weighs the victim three times, and the capsule's ε understates the victim's. On: the copies
    are excluded as not admitted, and the release is the honest sum."""
    fed = federation(defences, extra_accounts=2)
    honest = truths(fed)
    sybils = fed.chain.accounts[MINES + 1 :]
    release = attacks.sybil_copy(fed, 0, sybils)
    if defences == "off":
        assert release.contributors == MINES + 2
        np.testing.assert_allclose(release.sum, np.sum(honest, 0) + 2 * honest[0], atol=1e-6)
        reported = epsilon(noise_multiplier=1.0, sample_rate=1.0, steps=1, delta=1e-5)
        victims = epsilon(noise_multiplier=1.0 / 3, sample_rate=1.0, steps=1, delta=1e-5)
        assert round(reported, 2) == 4.73 and victims > 3 * reported  # sensitivity 3C
    else:
        assert release.contributors == MINES
        np.testing.assert_allclose(release.sum, np.sum(honest, 0), atol=1e-6)
        reasons = {e["mine"]: e["reason"] for e in release.settlement.excluded}
        assert reasons == dict.fromkeys(sybils, "not admitted")


def test_a_copy_from_an_admitted_address_does_not_open():
    """Even from an admitted address, a victim's box does not count: it is signed for the
    victim's context, and would open only in it."""
    fed = federation("on", extra_accounts=1)
    sybil = fed.chain.accounts[-1]
    fed.capsule.admit(sybil, verify_key_hex(Ed25519PrivateKey.generate()))
    release = attacks.sybil_copy(fed, 0, [sybil])
    [entry] = release.settlement.excluded
    assert entry["mine"] == sybil and entry["reason"] == "invalid"
    np.testing.assert_allclose(release.sum, np.sum(truths(fed), 0), atol=1e-6)


@pytest.mark.parametrize("defences", ["off", "on"])
def test_cancellation(defences):
    """One address submits the homomorphic negation of the other mines' ciphertexts. Off:
    the release is the victim's gradient alone. On: the ciphertexts are sealed, so there is
    nothing to negate, and the round is released as the honest sum."""
    fed = federation(defences, extra_accounts=1)
    honest = truths(fed)
    if defences == "off":
        release = attacks.cancel_others(fed, 0, fed.chain.accounts[-1])
        np.testing.assert_allclose(release.sum, honest[0], atol=1e-6)
    else:
        with pytest.raises(attacks.AttackFailed, match="sealed"):
            attacks.cancel_others(fed, 0, fed.chain.accounts[-1])
        release = fed.capsule.aggregate(fed.mines[0].model_id, 0)
        np.testing.assert_allclose(release.sum, np.sum(honest, 0), atol=1e-6)


@pytest.mark.parametrize("z", [0.0, 1.0])
def test_differencing_two_releases(z):
    """Residual risk, stated as such: re-posting the same model when one mine drops out and
    subtracting the releases recovers its gradient at z = 0. With noise the estimate carries
    noise of variance 2(zC)², and the capsule's ε counts both releases."""
    fed = federation("on", noise_multiplier=z, budget=20.0)
    victim = truths(fed)[0]
    estimate, releases = attacks.difference_releases(fed, 0)
    if z == 0:
        np.testing.assert_allclose(estimate, victim, atol=1e-6)
        assert all(np.isinf(r.epsilon_spent) for r in releases)
    else:
        assert np.abs(estimate - victim).max() > 0.01
        two = epsilon(noise_multiplier=z, sample_rate=1.0, steps=2, delta=1e-5)
        assert releases[-1].epsilon_spent == pytest.approx(two, rel=1e-9)


def test_k_minus_one_colluders_isolate_one_gradient():
    """Residual trust, stated as such: k protects one release only. A scientist whose k - 1
    colluding admitted mines tell it their gradients subtracts them from the release."""
    fed = in_process(replace(SMALL, mines=3), helium=True, min_contributors=3)
    honest = truths(fed)
    for mine in fed.mines:
        mine.step()
    release = fed.capsule.aggregate(fed.scientist.model_id, 0)
    np.testing.assert_allclose(release.sum - honest[1] - honest[2], honest[0], atol=1e-6)


def _anvil(accounts: int) -> Chain:
    require_anvil()
    return Chain.anvil(accounts=accounts)


@pytest.mark.parametrize("defences", ["off", "on"])
def test_impersonating_a_mine_on_anvil(defences):
    """On anvil the attacker sends from a victim mine's address (anvil_impersonateAccount).
    Off: its own bare ciphertext counts as the victim's. On: its box, signed with its own key,
    is excluded; the victim loses that round (it may submit once), which is all it can cost."""
    with _anvil(MINES + 2) as chain:
        fed = federation(defences, chain=chain)
        honest = truths(fed)
        victim = fed.mines[0]
        chain.web3.provider.make_request("anvil_impersonateAccount", [victim.account])
        model_id, key = fed.scientist.model_id, fed.capsule.public_key
        forged = EncryptedVector.encrypt(key, np.full(len(honest[0]), 0.5), max_abs=1.0,
                                         max_summands=MINES)  # fmt: skip
        if defences == "off":
            data = canonical_json(forged.to_dict())
        else:
            context = Context(chain.web3.eth.chain_id, fed.repository.address, model_id, 0,
                              victim.account)  # fmt: skip
            data = seal(forged, context, sealing_key=fed.capsule.record.sealing_public_key,
                        signing_key=Ed25519PrivateKey.generate())  # fmt: skip
        fed.repository.submit_gradient(model_id, 0, fed.store.put(data), sender=victim.account)
        assert victim.step() is None  # "already submitted this round"
        for mine in fed.mines[1:]:
            mine.step()
        release = fed.capsule.aggregate(model_id, 0)
        others = np.sum(honest[1:], 0)
        if defences == "off":
            np.testing.assert_allclose(release.sum, others + 0.5, atol=1e-6)
        else:
            np.testing.assert_allclose(release.sum, others, atol=1e-6)
            [entry] = release.settlement.excluded
            assert entry["mine"] == victim.account and "signature" in entry["detail"]
        # Impersonating the capsule's signing address settles nothing: the signature counts.
        signer = fed.capsule.record.signer
        chain.web3.provider.make_request("anvil_impersonateAccount", [signer])
        chain.web3.provider.make_request("anvil_setBalance", [signer, hex(10**18)])
        with pytest.raises(ContractRevert, match="not signed by the model's capsule"):
            fed.repository.settle_round(
                model_id, 0, considered=MINES, summed=[victim.account],
                settlement=b"\x00" * 32, signature=b"\x01" * 65, sender=signer,
            )  # fmt: skip
