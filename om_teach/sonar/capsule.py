"""The capsule (Sonar's Helium milestone): a separate process that holds the keys and releases
only each round's noised sum, with a settlement it signs.

In Hydrogen the data scientist holds the private key, so it could decrypt any mine's gradient
on the public store. Helium moves the key into a capsule (OpenMined's roadmap: "improve
security by trusted component with key ownership; tackle the differential privacy issue by
shielding individual gradients from the data scientist"). The capsule publishes a key record
(:mod:`om_teach.sonar.record`) whose SHA-256 fingerprint every mine is started with: mines take
the Paillier key, the sealing key and the capsule's signing address from that record only, and
refuse a model whose bundle or on-chain entry names another key or capsule. Each mine seals its
Paillier ciphertext to the capsule with HPKE under the round's context and signs it with its
own key (:mod:`om_teach.sonar.contribution`); the capsule's operator admits mines' signing
keys (``om-teach sonar capsule admit``), the scientist and the chain do not.

Once per round the capsule reads the round's CIDs and submitters from the contract itself,
fetches the contributions from the store itself, and sums homomorphically (Paillier,
EUROCRYPT 1999) those that are signed by the admitted key of the address that submitted them,
open under that round's context, are well formed, and hold a ciphertext it never opened before
(in any model or round). It decrypts the sum only when at least k contributions count, adds
Gaussian noise N(0, (zC)²) per coordinate (DP-FedAvg: McMahan et al., ICLR 2018), C being the
bundle's clip norm, charges the release to its ε budget (RDP at δ = 1e-5; Mironov, Talwar and
Zhang, 2019; every mine that submits takes part, so sample rate 1: no amplification is
claimed), and signs a settlement: the contributions it summed and those it excluded, each with
a reason (invalid, duplicate, not admitted). The contract closes the round only on that
signature (``ecrecover`` against the record's signer) and pays only the summed mines; a
submission that lands after the capsule read the round is late and unpaid. All state (keys,
admitted mines, opened ciphertexts, releases and ε) is durable in SQLite
(:mod:`om_teach.sonar.capsule_state`), committed before a sum leaves the process. The capsule
answers over HTTP (:mod:`om_teach.sonar.capsule_http`) and its operator runs it with
``om-teach sonar capsule`` (:mod:`om_teach.sonar.capsule_cli`).

Threat model. Parties: mines (data owners), the data scientist, the store, the chain, the
capsule, and whoever admits mines. The scientist may deviate: it writes the bundle, posts
models, controls any number of addresses, may impersonate any address on a dev chain, and
reads every byte on the store and chain.

* Key substitution fails: a pinned mine encrypts only under the record's key.
* Copies, re-randomisations, negations and combinations of a mine's contribution fail: only
  the capsule can open a box, a box opens only under its own context, and only the admitted
  key of the submitting address can sign for it. Extra addresses count for nothing unless
  admitted.
* k protects one release only. A scientist who colludes with k - 1 admitted mines can isolate
  one mine's gradient in a sum; so can a scientist with no colluder, by differencing two
  releases at the same weights whose contributors differ by one mine (re-posting the same
  model when a mine drops out). Across releases only (ε, δ) bounds what is learnt about any
  one mine, and only while the accounting counts every release: at z = 0 nothing does.
* Still trusted: the capsule, which opens every contribution and so could decrypt a single
  gradient, and which is trusted to add its noise and account it honestly (its noise is
  numpy's PCG64 seeded from the OS, not a cryptographic generator); and whoever admits mines.
  Admitted colluders can poison the model within ``max_abs`` and claim payouts. Secure
  aggregation (Bonawitz et al., CCS 2017) or a threshold key would remove the trust in the
  capsule.
* Mines are trusted to clip to C; the capsule checks only each value against the layout's
  max_abs. The chain and store are untrusted for integrity: content whose CID does not match
  is refused, naming it.

``insecure_accept_unsealed`` and ``insecure_seed`` exist only to show the attacks and to
repeat a lesson's numbers: the first counts bare ciphertexts from any address (the capsule
before sealing and admission), the second makes the noise predictable, so ε is reported as ∞.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from phe import PaillierPublicKey

from om_teach.crypto.paillier import DEFAULT_KEY_BITS, EncryptedVector
from om_teach.privacy.updates import noisy_sum
from om_teach.sonar.capsule_state import CapsuleState
from om_teach.sonar.contribution import (
    Context,
    InvalidContribution,
    ciphertext_digest,
    open_sealed,
)
from om_teach.sonar.model import ModelBundle, canonical_json
from om_teach.sonar.record import KeyRecord

if TYPE_CHECKING:
    from om_teach.sonar.contract import ModelRepository
    from om_teach.storage import ContentStore

DELTA = 1e-5
SAMPLE_RATE = 1.0
"""Every mine that submits takes part in its round: no sampling, so no amplification."""
SETTLEMENT_FORMAT = "om-teach/sonar-settlement/1"


class CapsuleRefusal(Exception):
    """The capsule refused a request; ``status`` is the HTTP status it answers with
    (400 bad input, 403 policy: too few contributors, another capsule's model or over budget,
    404 not found, 409 already released)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Settlement:
    """What the capsule summed in a round and what it excluded, signed by the capsule.

    ``document`` is canonical JSON; the contract checks ``signature`` over
    :func:`~om_teach.sonar.contract.settlement_digest` of the summed addresses and the
    document's SHA-256 (:attr:`digest`)."""

    document: bytes
    signature: bytes

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.document).digest()

    @property
    def content(self) -> dict[str, Any]:
        return json.loads(self.document)

    @property
    def summed(self) -> list[str]:
        return [entry["mine"] for entry in self.content["summed"]]

    @property
    def excluded(self) -> list[dict[str, str]]:
        """Each excluded contribution: ``mine``, ``cid``, ``reason`` and ``detail``."""
        return self.content["excluded"]

    def to_dict(self) -> dict[str, str]:
        return {"document": self.document.decode(), "signature": self.signature.hex()}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Settlement:
        return cls(data["document"].encode(), bytes.fromhex(data["signature"]))


@dataclass(frozen=True)
class Aggregate:
    """One round's release: the (noisy) sum of ``contributors`` gradients, the ε at δ = 1e-5
    spent so far in total after it and the budget ``epsilon_total`` (both infinite when the
    noise is off or seeded), and the signed settlement."""

    sum: np.ndarray
    contributors: int
    epsilon_spent: float
    epsilon_total: float
    settlement: Settlement


class Capsule:
    """The key holder: releases round aggregates from its durable ``state``.

    ``repository`` is the contract client the round's CIDs and submitters are read from,
    ``store`` where contributions and model bundles are fetched from. k, z and the budget come
    from the state's key record. Make a new capsule with :meth:`create`.
    """

    def __init__(
        self,
        repository: ModelRepository,
        store: ContentStore,
        state: CapsuleState,
        *,
        insecure_seed: int | None = None,
        insecure_accept_unsealed: bool = False,
    ) -> None:
        from om_teach.privacy.accounting import Budget

        record = state.record
        chain_id = repository.chain.web3.eth.chain_id
        if (record.chain_id, record.contract.lower()) != (chain_id, repository.address.lower()):
            raise ValueError(
                f"the capsule serves contract {record.contract} on chain {record.chain_id}, "
                f"not {repository.address} on chain {chain_id}"
            )
        self.repository = repository
        self.store = store
        self.state = state
        self.insecure_accept_unsealed = insecure_accept_unsealed
        self._seeded = insecure_seed is not None
        seed = insecure_seed if self._seeded else secrets.randbits(128)
        self._rng = np.random.default_rng(seed)
        noisy = sum(release.noisy for release in state.releases())
        history = [(record.noise_multiplier, SAMPLE_RATE, noisy)] if noisy else []
        self.budget = Budget(epsilon=max(record.budget, 1e-12), delta=record.delta, history=history)
        self._lock = threading.Lock()

    @classmethod
    def create(
        cls,
        repository: ModelRepository,
        store: ContentStore,
        data_dir: str | os.PathLike[str],
        *,
        key_bits: int = DEFAULT_KEY_BITS,
        min_contributors: int = 3,
        noise_multiplier: float = 1.0,
        budget: float = 10.0,
        **options: Any,
    ) -> Capsule:
        """A new capsule for ``repository``, its keys and record made in ``data_dir``;
        ``options`` as for the constructor."""
        check_settings(min_contributors, noise_multiplier, budget)
        state = CapsuleState.create(
            data_dir,
            chain_id=repository.chain.web3.eth.chain_id,
            contract=repository.address,
            key_bits=key_bits,
            min_contributors=min_contributors,
            noise_multiplier=noise_multiplier,
            budget=budget,
            delta=DELTA,
        )
        return cls(repository, store, state, **options)

    def __repr__(self) -> str:
        return (
            f"<Capsule {self.fingerprint[:16]}... {self.public_key.n.bit_length()}-bit key, "
            f"k={self.min_contributors}, z={self.noise_multiplier:g}, epsilon "
            f"{self.epsilon_spent:.4g}/{self.epsilon_total:g}, {len(self.admitted)} mines admitted>"
        )

    @property
    def record(self) -> KeyRecord:
        """The key record mines pin by its :attr:`fingerprint`."""
        return self.state.record

    @property
    def fingerprint(self) -> str:
        return self.state.record.fingerprint

    @property
    def public_key(self) -> PaillierPublicKey:
        """The key mines encrypt their gradients under (the private key never leaves)."""
        return self.state.paillier_private_key.public_key

    @property
    def min_contributors(self) -> int:
        return self.record.min_contributors

    @property
    def noise_multiplier(self) -> float:
        return self.record.noise_multiplier

    @property
    def admitted(self) -> list[str]:
        """The addresses of the admitted mines."""
        with self._lock:
            return sorted(self.state.admitted())

    def admit(self, address: str, verify_key: str) -> None:
        """Admit a mine: the address it submits from and its Ed25519 key (hex)."""
        with self._lock:
            self.state.admit(address, verify_key)

    @property
    def epsilon_spent(self) -> float:
        """ε at δ = 1e-5 of every release so far (infinite when the noise is off or seeded)."""
        return math.inf if self._no_guarantee else self.budget.spent

    @property
    def epsilon_total(self) -> float:
        """The budget (infinite when the noise is off or seeded: there is no guarantee)."""
        return math.inf if self._no_guarantee else self.record.budget

    @property
    def decrypted_rounds(self) -> list[tuple[int, int]]:
        """The (model, round) pairs already released, in order."""
        with self._lock:
            return sorted((r.model_id, r.round) for r in self.state.releases())

    @property
    def _noiseless(self) -> bool:
        return self.noise_multiplier == 0

    @property
    def _no_guarantee(self) -> bool:
        return self._noiseless or self._seeded

    def aggregate(self, model_id: int, round: int) -> Aggregate:
        """Release the noisy sum of round ``round`` of model ``model_id`` with its signed
        settlement, or raise :class:`CapsuleRefusal` saying why not, having recorded and spent
        nothing."""
        for name, value in (("model_id", model_id), ("round", round)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CapsuleRefusal(f"{name} must be a non-negative int, got {value!r}")
        with self._lock:
            return self._aggregate(model_id, round)

    def _aggregate(self, model_id: int, round: int) -> Aggregate:
        if self.state.released(model_id, round):
            raise CapsuleRefusal(
                f"round {round} of model {model_id} was already released: the capsule "
                "decrypts each round once",
                409,
            )
        self._check_model(model_id, round)
        bundle = self._bundle(model_id, round)
        if not self._noiseless:
            cost = self.budget.cost(noise_multiplier=self.noise_multiplier, sample_rate=SAMPLE_RATE)
            if cost > self.record.budget:
                raise CapsuleRefusal(
                    f"releasing round {round} of model {model_id} would bring epsilon to "
                    f"{cost:.4g}, over the budget of {self.record.budget:g} at delta="
                    f"{DELTA:g} ({self.budget.spent:.4g} spent); refused",
                    403,
                )
        cids = self.repository.gradient_cids(model_id, round)
        submitters = self.repository.submitters(model_id, round)
        # Both arrays grow together: their common prefix pairs CIDs with submitters even if a
        # submission landed between the two reads. What lands later is late: the contract
        # pays only what the settlement sums.
        considered = list(zip(cids, submitters, strict=False))
        summed, excluded, vectors, digests = [], [], [], []
        admitted = self.state.admitted()
        for cid, submitter in considered:
            try:
                vector = self._contribution(cid, submitter, model_id, round, bundle, admitted)
            except _Excluded as exclusion:
                excluded.append({"mine": submitter, "cid": cid, **exclusion.entry})
                continue
            digest = ciphertext_digest(vector)
            if digest in digests or self.state.opened_before([digest]):
                excluded.append(
                    {
                        "mine": submitter,
                        "cid": cid,
                        "reason": "duplicate",
                        "detail": "a ciphertext the capsule has opened before",
                    }
                )
                continue
            summed.append({"mine": submitter, "cid": cid})
            vectors.append(vector)
            digests.append(digest)
        if len(vectors) < self.min_contributors:
            reasons = "; ".join(f"{e['mine']}: {e['reason']} ({e['detail']})" for e in excluded)
            raise CapsuleRefusal(
                f"round {round} of model {model_id} has {len(vectors)} valid contribution(s) "
                f"from admitted mines, fewer than the {self.min_contributors} the capsule "
                f"requires to decrypt a sum" + (f"; excluded: {reasons}" if reasons else ""),
                403,
            )
        if len(vectors) > bundle.max_summands:
            raise CapsuleRefusal(
                f"round {round} has {len(vectors)} gradients, more than the bundle's "
                f"max_summands {bundle.max_summands}: their sum could overflow"
            )
        try:
            total = EncryptedVector.sum(vectors).decrypt(self.state.paillier_private_key)
        except ValueError as error:
            raise CapsuleRefusal(f"the sum of round {round} does not decrypt: {error}") from error
        if self._noiseless:
            released, spent = total, math.inf
        else:
            released = noisy_sum(
                total, clip_norm=bundle.clip_norm, noise_multiplier=self.noise_multiplier,
                rng=self._rng,
            )  # fmt: skip
            spent = self.budget.cost(
                noise_multiplier=self.noise_multiplier, sample_rate=SAMPLE_RATE
            )
        settlement = self._settle(model_id, round, len(considered), summed, excluded, spent)
        self.state.record_release(
            model_id,
            round,
            digests=digests,
            noisy=not self._noiseless,
            epsilon=None if self._noiseless else spent,
            settlement=canonical_json(settlement.to_dict()),
        )
        if not self._noiseless:
            self.budget.spend(noise_multiplier=self.noise_multiplier, sample_rate=SAMPLE_RATE)
        return Aggregate(released, len(vectors), self.epsilon_spent, self.epsilon_total, settlement)

    def _settle(
        self,
        model_id: int,
        round: int,
        considered: int,
        summed: list[dict[str, str]],
        excluded: list[dict[str, str]],
        spent: float,
    ) -> Settlement:
        from om_teach.sonar.contract import settlement_digest

        record = self.record
        document = canonical_json(
            {
                "format": SETTLEMENT_FORMAT,
                "capsule": record.fingerprint,
                "chain_id": record.chain_id,
                "contract": record.contract,
                "model_id": model_id,
                "round": round,
                "considered": considered,
                "summed": summed,
                "excluded": excluded,
                "epsilon": None if self._no_guarantee else spent,
            }
        )
        digest = settlement_digest(
            record.chain_id,
            record.contract,
            model_id,
            round,
            considered,
            [entry["mine"] for entry in summed],
            hashlib.sha256(document).digest(),
        )
        signature = self.state.signer.unsafe_sign_hash(digest).signature
        return Settlement(document, bytes(signature))

    def _check_model(self, model_id: int, round: int) -> None:
        from om_teach.sonar.contract import ContractRevert

        try:
            model = self.repository.model(model_id)
        except ContractRevert as error:
            raise CapsuleRefusal(f"model {model_id}: {error.reason}", 404) from error
        if model.capsule is None or model.capsule.lower() != self.record.signer.lower():
            raise CapsuleRefusal(
                f"model {model_id} is bound on chain to capsule {model.capsule}, not to this "
                f"one ({self.record.signer}): its settlements could not close its rounds",
                403,
            )
        if model.capsule_record != self.fingerprint:
            raise CapsuleRefusal(
                f"model {model_id} names capsule record {model.capsule_record}, not this "
                f"capsule's {self.fingerprint}",
                403,
            )
        if round != model.current_round:
            status = 409 if round < model.current_round else 404
            raise CapsuleRefusal(
                f"round {round} of model {model_id} is not open (the current round is "
                f"{model.current_round})",
                status,
            )

    def _bundle(self, model_id: int, round: int) -> ModelBundle:
        from om_teach.sonar.mine import round_model_cid

        cid = round_model_cid(self.repository, model_id, round)
        what = f"the model bundle {cid} of round {round}"
        try:
            bundle = ModelBundle.from_bytes(self._fetch(cid, what))
        except (TypeError, ValueError) as error:
            raise CapsuleRefusal(f"{what} is not a valid model bundle: {error}") from error
        if bundle.public_key_n not in (None, self.public_key.n):
            raise CapsuleRefusal(
                f"{what} names a Paillier key that is not the capsule's: in Helium the bundle "
                "chooses no key"
            )
        if bundle.round != round:
            raise CapsuleRefusal(f"{what} says it is round {bundle.round}, not {round}")
        return bundle

    def _fetch(self, cid: str, what: str) -> bytes:
        from om_teach.storage import TamperedContentError

        try:
            return self.store.get(cid)
        except TamperedContentError as error:
            raise CapsuleRefusal(f"{what}: tampered content: {error}") from error
        except KeyError as error:
            raise CapsuleRefusal(f"{what}: CID {cid} is not in the store", 404) from error
        except ValueError as error:
            raise CapsuleRefusal(f"{what}: malformed CID {cid!r}: {error}") from error

    def _contribution(
        self,
        cid: str,
        submitter: str,
        model_id: int,
        round: int,
        bundle: ModelBundle,
        admitted: dict[str, Any],
    ) -> EncryptedVector:
        """The ciphertext of one submission, or :class:`_Excluded` saying why it does not count."""
        try:
            data = self._fetch(cid, f"the contribution {cid} of {submitter}")
        except CapsuleRefusal as refusal:
            raise _Excluded("invalid", refusal.message) from None
        if self.insecure_accept_unsealed:
            try:
                vector = EncryptedVector.from_dict(json.loads(data), public_key=self.public_key)
            except (UnicodeDecodeError, ValueError, TypeError) as error:
                raise _Excluded("invalid", f"not a ciphertext under the key: {error}") from None
        else:
            if submitter not in admitted:
                raise _Excluded("not admitted", "its address has no admitted signing key")
            context = Context(
                chain_id=self.record.chain_id,
                contract=self.record.contract,
                model_id=model_id,
                round=round,
                mine=submitter,
            )
            try:
                vector = open_sealed(
                    data,
                    context,
                    sealing_key=self.state.sealing_key,
                    verify_key=admitted[submitter],
                    public_key=self.public_key,
                )
            except InvalidContribution as error:
                raise _Excluded("invalid", str(error)) from None
        expected = bundle.n_features + 1
        layout = vector.layout
        declared = (layout.precision, layout.max_abs, layout.max_summands)
        wanted = (bundle.precision, bundle.max_abs, bundle.max_summands)
        if vector.length != expected:
            raise _Excluded("invalid", f"{vector.length} values; the model needs {expected}")
        if declared != wanted:
            raise _Excluded(
                "invalid", f"layout (precision, max_abs, max_summands) {declared}, not {wanted}"
            )
        if vector.count != 1:
            raise _Excluded("invalid", f"claims to sum {vector.count} encryptions, not one")
        return vector


class _Excluded(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.entry = {"reason": reason, "detail": detail}


def check_settings(min_contributors: object, noise_multiplier: object, budget: object) -> None:
    """TypeError or ValueError naming the first of k, z and the budget that a capsule cannot use."""
    if isinstance(min_contributors, bool) or not isinstance(min_contributors, int):
        raise TypeError(f"min_contributors must be an int, not {type(min_contributors).__name__}")
    if min_contributors < 1:
        raise ValueError(f"min_contributors must be at least 1, got {min_contributors}")
    for name, value in (("noise_multiplier", noise_multiplier), ("budget", budget)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number, not {type(value).__name__}")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and non-negative, got {value}")
    if noise_multiplier > 0 and not budget > 0:
        raise ValueError(f"a noisy capsule needs a positive budget, got {budget}")
