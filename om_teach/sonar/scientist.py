"""The data scientist: posts the model and its bounty, then runs the rounds.

Each round (:meth:`Scientist.run_round`) waits for the mines' gradient CIDs on chain until every
expected mine has submitted or the deadline passes (then it goes on with those that did, and
fails only if none did: a crashed mine costs its round its gradient and nothing else); has the
aggregator sum and decrypt the round's encrypted gradients; steps the model by
``learning_rate * sum / count``; evaluates it on the scientist's own validation rows; stores the
new bundle, records it and its error on chain (``evaluate_round``) and pays the round
(``pay_round``).

In Helium the model is bound on chain to the capsule (its signing address and key record
fingerprint) and its bundle names no key. The capsule's release comes with a signed
settlement, which the scientist sends first (``settle_round``): the round then takes no more
gradients and pays only the mines the capsule summed; a bad submission is excluded with its
reason instead of blocking the round, and a late one is not paid. In Hydrogen the contract
pays everyone who submitted before ``evaluate_round`` closed the round, and anything wrong
with a submission (a malformed CID, tampered content, a ciphertext under another key) raises
before the round is recorded, naming the CID.

An aggregator has one method, ``aggregate(model_id, round) -> RoundSum``:
:class:`LocalKeyAggregator` (Hydrogen: the scientist's own Paillier key pair) or
``om_teach.sonar.capsule_http.CapsuleClient`` (Helium: a separate key-holder process).

Threat model (Hydrogen, as in OpenMined's Sonar): mines are honest but curious, and the scientist
is trusted to decrypt only the round's sum. It could decrypt any single stored ciphertext (they
are on a shared store under its key), and nothing here stops it: that is what Helium's capsule
fixes, where the scientist never holds the private key and sees only noised sums. The scientist
reports its own validation errors and the contract pays by them, so mines trust its evaluation,
as in Sonar. Nothing here imports torch or opacus.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
from phe import PaillierPrivateKey, PaillierPublicKey

from om_teach.crypto.paillier import EncryptedVector, generate_keypair
from om_teach.sonar.contract import ModelRepository
from om_teach.sonar.model import ModelBundle, mse
from om_teach.sonar.record import KeyRecord
from om_teach.storage import ContentStore, parse_cid

if TYPE_CHECKING:
    from om_teach.sonar.capsule import Settlement

WEI_PER_ETH = 10**18


@dataclass(frozen=True)
class RoundSum:
    """What an aggregator hands back: the decrypted (noisy) sum, the addresses it sums, and
    in Helium the capsule's signed settlement."""

    sum: np.ndarray
    contributors: tuple[str, ...]
    settlement: Settlement | None = None


class Aggregator(Protocol):
    """Sums a round's encrypted gradients and hands back only the decrypted sum."""

    def aggregate(self, model_id: int, round: int) -> RoundSum: ...


def fetch_gradients(
    repository: ModelRepository,
    store: ContentStore,
    public_key: PaillierPublicKey,
    model_id: int,
    round: int,
) -> list[EncryptedVector]:
    """The round's submitted ciphertexts, each read by its on-chain CID and checked to be a
    vector under ``public_key``; ValueError or TamperedContentError naming the CID otherwise."""
    cids = repository.gradient_cids(model_id, round)
    submitters = repository.submitters(model_id, round)
    count = min(len(cids), len(submitters))  # a submission may land between the two reads
    vectors = []
    for cid, submitter in zip(cids[:count], submitters[:count], strict=True):
        where = f"round {round}: the gradient {cid!r} submitted by {submitter}"
        try:
            parse_cid(cid)
        except ValueError as error:
            raise ValueError(f"{where} is not a CID the store can serve: {error}") from None
        data = store.get(cid)
        try:
            vectors.append(EncryptedVector.from_dict(json.loads(data), public_key=public_key))
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"{where} is not a ciphertext under the round's key: {error}"
            ) from None
    return vectors


class LocalKeyAggregator:
    """Hydrogen: the scientist's own Paillier key pair; fetches, sums, decrypts only the sum."""

    def __init__(
        self,
        repository: ModelRepository,
        store: ContentStore,
        *,
        key_bits: int = 2048,
        keypair: tuple[PaillierPublicKey, PaillierPrivateKey] | None = None,
    ) -> None:
        self.repository = repository
        self.store = store
        self.public_key, self._private_key = keypair or generate_keypair(key_bits)

    @property
    def public_key_n(self) -> int:
        return self.public_key.n

    def aggregate(self, model_id: int, round: int) -> RoundSum:
        """The decrypted sum of the round's gradients and the mines it sums."""
        vectors = fetch_gradients(self.repository, self.store, self.public_key, model_id, round)
        if not vectors:
            raise ValueError(f"round {round} of model {model_id} has no gradients to aggregate")
        submitters = self.repository.submitters(model_id, round)[: len(vectors)]
        total = EncryptedVector.sum(vectors).decrypt(self._private_key)
        return RoundSum(total, tuple(submitters))


@dataclass(frozen=True)
class RoundRecord:
    """What one round did: its validation MSE, who contributed, who was excluded and why, who
    was paid, and the cost.

    ``epsilon`` is the ε at δ = 1e-5 the capsule has spent so far (infinite with its noise
    off or seeded), None in Hydrogen, which adds no noise; ``excluded`` maps each submitter
    the capsule did not sum to its reason (Helium only); ``seconds`` splits the wall time.
    """

    round: int
    mse: float
    contributors: tuple[str, ...]
    excluded: dict[str, str]
    payouts_eth: dict[str, float]
    gas: dict[str, int]
    epsilon: float | None
    model_cid: str
    seconds: dict[str, float] = field(default_factory=dict)


class Scientist:
    """Posts a linear model with a bounty and runs its rounds through an aggregator."""

    def __init__(
        self,
        repository: ModelRepository,
        store: ContentStore,
        aggregator: Aggregator,
        *,
        account: str,
        X_val: np.ndarray,
        y_val: np.ndarray,
        capsule: KeyRecord | None = None,
        public_key_n: int | None = None,
    ) -> None:
        self.repository = repository
        self.store = store
        self.aggregator = aggregator
        self.account = account
        self.X_val = np.asarray(X_val, dtype=float)
        self.y_val = np.asarray(y_val, dtype=float)
        self.capsule = capsule
        if capsule is None and public_key_n is None:
            public_key_n = getattr(aggregator, "public_key_n", None)
            if isinstance(public_key_n, bool) or not isinstance(public_key_n, int):
                raise TypeError(
                    "pass public_key_n (Hydrogen) or capsule (Helium): the aggregator does "
                    "not say which key it holds"
                )
        self.public_key_n = public_key_n
        self.model_id: int | None = None
        self.bundle: ModelBundle | None = None
        self.expected_mines = 0

    def post(
        self,
        *,
        mines: int,
        clip_norm: float,
        learning_rate: float,
        bounty_wei: int,
        precision: float = 1e-6,
        target_error: float = 0.0,
    ) -> int:
        """Store the zero model for ``mines`` data owners and post it with ``bounty_wei``,
        bound to the capsule in Helium."""
        if isinstance(mines, bool) or not isinstance(mines, int) or mines < 1:
            raise ValueError(f"mines must be a positive int, got {mines!r}")
        self.bundle = ModelBundle(
            weights=(0.0,) * self.X_val.shape[1],
            bias=0.0,
            public_key_n=self.public_key_n,
            precision=precision,
            max_abs=clip_norm,
            max_summands=mines,
            clip_norm=clip_norm,
            learning_rate=learning_rate,
            round=0,
        )
        cid = self.store.put(self.bundle.to_bytes())
        self.model_id, _ = self.repository.post_model(
            cid,
            bounty=bounty_wei,
            initial_error=self.evaluate(self.bundle),
            target_error=target_error,
            sender=self.account,
            capsule=None if self.capsule is None else self.capsule.signer,
            capsule_record=None if self.capsule is None else self.capsule.fingerprint,
        )
        self.expected_mines = mines
        return self.model_id

    def evaluate(self, bundle: ModelBundle) -> float:
        """The bundle's MSE on the validation rows."""
        return mse(self.X_val, self.y_val, np.array(bundle.weights), bundle.bias)

    def wait_for_submissions(self, round: int, *, timeout: float, poll: float = 0.05) -> list[str]:
        """The round's submitters once all expected mines are in or ``timeout`` s have passed;
        TimeoutError if none submitted by then."""
        deadline = time.monotonic() + timeout
        while True:
            submitters = self.repository.submitters(self.model_id, round)
            if len(submitters) >= self.expected_mines or time.monotonic() >= deadline:
                break
            time.sleep(poll)
        if not submitters:
            raise TimeoutError(
                f"no mine submitted a gradient for round {round} of model {self.model_id} "
                f"within {timeout} s"
            )
        return submitters

    def run_round(self, *, timeout: float, poll: float = 0.05) -> RoundRecord:
        """Wait, aggregate, step, evaluate, record and pay the current round."""
        if self.bundle is None or self.model_id is None:
            raise RuntimeError("post the model first")
        round = self.repository.current_round(self.model_id)
        if round != self.bundle.round:
            raise RuntimeError(
                f"the contract is at round {round} but the scientist at {self.bundle.round}"
            )
        start = time.perf_counter()
        self.wait_for_submissions(round, timeout=timeout, poll=poll)
        waited = time.perf_counter()
        result = self.aggregator.aggregate(self.model_id, round)
        aggregated = time.perf_counter()
        gas = {}
        excluded = {}
        if result.settlement is not None:
            settlement = result.settlement
            considered = settlement.content["considered"]
            settled = self.repository.settle_round(
                self.model_id,
                round,
                considered=considered,
                summed=list(result.contributors),
                settlement=settlement.digest,
                signature=settlement.signature,
                sender=self.account,
            )
            gas["settle_round"] = settled.gas_used
            excluded = {e["mine"]: e["reason"] for e in settlement.excluded}
            late = self.repository.submitters(self.model_id, round)[considered:]
            excluded |= dict.fromkeys(late, "late")
        count = len(result.contributors)
        new = self.bundle.stepped(np.asarray(result.sum, dtype=float) / count)
        error = self.evaluate(new)
        cid = self.store.put(new.to_bytes())
        evaluated = self.repository.evaluate_round(
            self.model_id, round, cid, error, sender=self.account
        )
        paid = self.repository.pay_round(self.model_id, round, sender=self.account)
        self.bundle = new
        return RoundRecord(
            round=round,
            mse=error,
            contributors=tuple(result.contributors),
            excluded=excluded,
            payouts_eth={
                e.args["to"]: e.args["amount"] / WEI_PER_ETH
                for e in paid.events
                if e.name == "Paid"
            },
            gas=gas | {"evaluate_round": evaluated.gas_used, "pay_round": paid.gas_used},
            epsilon=getattr(self.aggregator, "last_epsilon_spent", None),
            model_cid=cid,
            seconds={
                "wait": waited - start,
                "aggregate": aggregated - waited,
                "record": time.perf_counter() - aggregated,
            },
        )

    def withdraw(self) -> None:
        """Take back what is left of the bounty; mines watching the escrow then stop."""
        if self.model_id is not None and self.repository.remaining_bounty(self.model_id) > 0:
            self.repository.withdraw_bounty(self.model_id, sender=self.account)
