"""A mine: one data owner that trains the posted model on its own rows, round by round.

Each :meth:`Mine.step` looks at the contract once (views, never event logs: eth-tester scans
logs slowly) and, if the model's current round has no gradient from this mine yet, fetches that
round's model bundle from the store, computes the MSE gradient on its rows, clips it to the
bundle's norm C (:func:`om_teach.privacy.updates.clip`), encrypts it under the round's Paillier
key (:class:`~om_teach.crypto.paillier.EncryptedVector`), stores the ciphertext and submits its
CID. In Hydrogen that key is the one the bundle names. In Helium the mine is pinned to a capsule
(:class:`~om_teach.sonar.record.KeyRecord`, checked by fingerprint): it takes every key from the
record, refuses a model whose on-chain entry or bundle names another capsule or key, and seals
its ciphertext to the capsule and signs it with its own key
(:mod:`om_teach.sonar.contribution`). ``python -m om_teach.sonar.mine`` runs one mine as its
own process: it polls until a stop file appears, the model's escrow is empty (the owner
withdrew the bounty, or it is all paid out), or the chain stops answering.

Threat model (Paillier as in :mod:`om_teach.crypto.paillier`): the mine trusts the chain to
run the contract and the key holder (the scientist in Hydrogen, the capsule in Helium) to
decrypt only sums. Its rows never leave the process; what leaves is one ciphertext per round,
whose CID, round and sender are public on chain. In Hydrogen the mine encrypts under whatever
key the bundle names, so the scientist can decrypt its gradient (or name a key of its own):
Hydrogen trusts the scientist. A pinned mine trusts only the fingerprint its operator gave it.
It imports numpy, phe, web3, cryptography and the store only (no torch, no pandas), so that ten
fit on a laptop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from phe import PaillierPublicKey

from om_teach.crypto.paillier import EncryptedVector
from om_teach.privacy.updates import clip
from om_teach.sonar.chain import Chain
from om_teach.sonar.contract import ContractRevert, ModelRepository
from om_teach.sonar.contribution import Context, load_signing_key, seal
from om_teach.sonar.model import ModelBundle, canonical_json, gradient
from om_teach.sonar.record import KeyRecord, PinMismatch, fetch_record
from om_teach.storage import ContentStore

LATE = ("not the model's current round", "already submitted this round")


def round_model_cid(repository: ModelRepository, model_id: int, round: int) -> str:
    """The CID of the model that ``round`` trains: the posted one for round 0, else the model
    that the previous round's evaluation recorded."""
    if round == 0:
        return repository.model(model_id).cid
    return repository.round_result(model_id, round - 1).cid


class Mine:
    """One data owner: its rows, the contract, the store, and the account it submits from.

    ``capsule`` pins a Helium capsule's key record; ``signing_key`` is then the mine's own
    Ed25519 key, which the capsule's operator admitted. ``seal=False`` submits the bare
    ciphertext instead: the capsule before sealing, kept only to show the attacks on it.
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        repository: ModelRepository,
        store: ContentStore,
        account: str,
        model_id: int,
        capsule: KeyRecord | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        seal: bool = True,
    ) -> None:
        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        if X.ndim != 2 or y.shape != (len(X),) or len(X) == 0:
            raise ValueError(f"a mine needs rows X (n, d) and y (n,), got {X.shape} and {y.shape}")
        if capsule is not None:
            chain_id = repository.chain.web3.eth.chain_id
            if (capsule.chain_id, capsule.contract.lower()) != (
                chain_id,
                repository.address.lower(),
            ):
                raise PinMismatch(
                    f"the pinned capsule serves contract {capsule.contract} on chain "
                    f"{capsule.chain_id}, not {repository.address} on chain {chain_id}"
                )
            if seal and signing_key is None:
                raise ValueError("a mine pinned to a capsule needs its signing key to seal")
        self.X, self.y = X, y
        self.repository = repository
        self.store = store
        self.account = account
        self.model_id = model_id
        self.capsule = capsule
        self.signing_key = signing_key
        self.seal = seal
        self.submitted: dict[int, str] = {}

    def __repr__(self) -> str:
        return f"Mine({self.account}, {len(self.y)} rows, model {self.model_id})"

    def fetch_model(self, round: int) -> ModelBundle:
        """The bundle that ``round`` trains, checked against this mine's rows."""
        bundle = ModelBundle.from_bytes(
            self.store.get(round_model_cid(self.repository, self.model_id, round))
        )
        if bundle.round != round:
            raise ValueError(f"the model posted for round {round} says it is round {bundle.round}")
        bundle.check_features(self.X.shape[1])
        if self.capsule is not None and bundle.public_key_n not in (None, self.capsule.paillier_n):
            raise PinMismatch(
                f"model {self.model_id}: its round {round} bundle names the Paillier key "
                f"n = ...{bundle.public_key_n % 10**12}, not the pinned capsule's n = "
                f"...{self.capsule.paillier_n % 10**12}; refusing to encrypt under it"
            )
        return bundle

    def check_model(self) -> None:
        """PinMismatch unless the model's on-chain entry names the pinned capsule."""
        info = self.repository.model(self.model_id)
        pinned = self.capsule
        if info.capsule is None or info.capsule.lower() != pinned.signer.lower():
            raise PinMismatch(
                f"model {self.model_id} is bound on chain to capsule {info.capsule}, not the "
                f"pinned capsule {pinned.signer}; refusing to train it"
            )
        if info.capsule_record != pinned.fingerprint:
            raise PinMismatch(
                f"model {self.model_id} names capsule record {info.capsule_record}, not the "
                f"pinned {pinned.fingerprint}; refusing to train it"
            )

    def encrypted_gradient(self, bundle: ModelBundle) -> EncryptedVector:
        """This mine's clipped gradient for ``bundle``, encrypted under the pinned capsule's
        key, or in Hydrogen under the bundle's."""
        if self.capsule is not None:
            key = self.capsule.paillier_key
        elif bundle.public_key_n is None:
            raise ValueError(
                f"model {self.model_id}'s bundle names no key: it is a Helium model, and this "
                "mine is not pinned to a capsule (start it with --capsule)"
            )
        else:
            key = PaillierPublicKey(bundle.public_key_n)
        g = gradient(self.X, self.y, np.array(bundle.weights), bundle.bias)
        return EncryptedVector.encrypt(
            key,
            clip(g, clip_norm=bundle.clip_norm),
            precision=bundle.precision,
            max_abs=bundle.max_abs,
            max_summands=bundle.max_summands,
        )

    def step(self) -> str | None:
        """Handle the current round once: the submitted gradient's CID, or None when this mine
        has already submitted in it (or the round closed while it worked)."""
        round = self.repository.current_round(self.model_id)
        if round in self.submitted:
            return None
        if self.account in self.repository.submitters(self.model_id, round):
            self.submitted[round] = ""
            return None
        if self.capsule is not None:
            self.check_model()
        vector = self.encrypted_gradient(self.fetch_model(round))
        if self.capsule is not None and self.seal:
            context = Context(
                chain_id=self.capsule.chain_id,
                contract=self.capsule.contract,
                model_id=self.model_id,
                round=round,
                mine=self.account,
            )
            data = seal(
                vector,
                context,
                sealing_key=self.capsule.sealing_public_key,
                signing_key=self.signing_key,
            )
        else:
            data = canonical_json(vector.to_dict())
        cid = self.store.put(data)
        try:
            self.repository.submit_gradient(self.model_id, round, cid, sender=self.account)
        except ContractRevert as error:
            if error.reason in LATE:
                return None
            raise
        self.submitted[round] = cid
        return cid


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m om_teach.sonar.mine", description="Run one Sonar mine (a data owner)."
    )
    parser.add_argument("--rpc-url", required=True, help="the chain's JSON-RPC URL")
    parser.add_argument("--contract", required=True, help="the ModelRepository's address")
    parser.add_argument("--model-id", type=int, required=True)
    parser.add_argument("--account-index", type=int, required=True, help="which node account")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", type=Path, help="a DirectoryStore folder")
    where.add_argument("--ipfs-api", help="an IPFS HTTP API multiaddr")
    rows = parser.add_mutually_exclusive_group(required=True)
    rows.add_argument("--rows", type=Path, help="an .npz file with arrays X and y")
    rows.add_argument(
        "--rows-seed",
        type=int,
        help="load the diabetes training rows with this seed and take this mine's iid share "
        "(imports scikit-learn and pandas: about 90 MB more per mine than --rows)",
    )
    parser.add_argument("--owners", type=int, default=10, help="owners the rows are dealt to")
    parser.add_argument("--owner", type=int, help="this mine's share (default account-index-1)")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between looks")
    parser.add_argument("--stop-file", type=Path, help="stop when this file exists")
    parser.add_argument(
        "--abi", type=Path, help="the contract's ABI as JSON (skips compiling it: 2 s, 20 MB)"
    )
    parser.add_argument("--ready-file", type=Path, help="created once the mine is set up")
    parser.add_argument("--capsule", help="Helium: the capsule's key record fingerprint to pin")
    parser.add_argument("--capsule-url", help="Helium: where the capsule serves its key record")
    parser.add_argument(
        "--key", type=Path, help="Helium: this mine's Ed25519 signing key (PEM; made if missing)"
    )
    return parser


def load_rows(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """The mine's rows from ``--rows`` or from ``--rows-seed``/``--owners``/``--owner``."""
    if args.rows is not None:
        with np.load(args.rows) as data:
            return data["X"], data["y"]
    from om_teach.data import iid, load_diabetes

    owner = args.account_index - 1 if args.owner is None else args.owner
    if not 0 <= owner < args.owners:
        raise ValueError(f"owner {owner} is not one of the {args.owners} owners")
    split = load_diabetes(args.rows_seed)
    share = iid(len(split.y_train), args.owners, args.rows_seed)[owner]
    return split.X_train[share], split.y_train[share]


def _store(args: argparse.Namespace) -> ContentStore:
    from om_teach.storage import DirectoryStore, IpfsStore

    return DirectoryStore(args.store) if args.store is not None else IpfsStore(args.ipfs_api)


def _repository(chain: Chain, address: str, abi: Path | None) -> ModelRepository:
    return ModelRepository.at(
        chain, address, abi=None if abi is None else json.loads(abi.read_text())
    )


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run a mine: 0 once the stop file appears or the model's escrow is empty, 1 if the chain
    stops answering, 2 if it cannot start (naming why)."""
    args = _parser().parse_args(argv)
    try:
        X, y = load_rows(args)
        store = _store(args)
        chain = Chain.connect(args.rpc_url)
        if not 0 <= args.account_index < len(chain.accounts):
            raise ValueError(
                f"account index {args.account_index} is not one of the node's "
                f"{len(chain.accounts)} accounts"
            )
        repository = _repository(chain, args.contract, args.abi)
        capsule, signing_key = None, None
        if args.capsule is not None:
            if not (args.capsule_url and args.key):
                raise ValueError("--capsule needs --capsule-url and --key")
            capsule = fetch_record(args.capsule_url, args.capsule)
            signing_key = load_signing_key(args.key, create=True)
        mine = Mine(
            X,
            y,
            repository=repository,
            store=store,
            account=chain.accounts[args.account_index],
            model_id=args.model_id,
            capsule=capsule,
            signing_key=signing_key,
        )
    except (ConnectionError, ValueError, TypeError, OSError, KeyError) as error:
        _log(f"mine {args.account_index}: cannot start: {error}")
        return 2
    _log(f"{mine} started")
    if args.ready_file:
        args.ready_file.touch()
    while not (args.stop_file and args.stop_file.exists()):
        try:
            if repository.model_count() > args.model_id:
                if repository.remaining_bounty(args.model_id) == 0:
                    _log(f"{mine}: the model's escrow is empty; stopping")
                    return 0
                cid = mine.step()
                if cid:
                    _log(f"{mine}: round {max(mine.submitted)} gradient {cid}")
        except Exception as error:  # one bad round must not end the mine: log, retry later
            if not chain.web3.provider.is_connected():
                _log(f"{mine}: the chain at {args.rpc_url} stopped answering; stopping")
                return 1
            _log(f"{mine}: {type(error).__name__}: {error}")
            time.sleep(1.0)
        time.sleep(args.poll)
    _log(f"{mine}: stop file {args.stop_file} found; stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
