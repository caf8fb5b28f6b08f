"""The ModelRepository contract: compiled in-process with Vyper, and a client for it.

The contract (``contracts/model_repository.vy``) holds the bounties of Sonar's Hydrogen
milestone (OpenMined, 2017): a data scientist posts a model's IPFS CID with a bounty; data
owners submit the CIDs of their Paillier-encrypted gradients, one per address per round; the
scientist records each round's new model and error and pays the round's contributors by the
improvement, ``bounty * (best_before - max(new_error, target)) // (initial - target)``, split
equally (both divisions round down; the wei left over stay in escrow). One deployment holds
many models, each with its own owner, escrow and rounds.

Units: the client takes and returns errors as floats; on chain they are integers scaled by
:data:`ERROR_SCALE` (10**6), rounded to nearest by :func:`to_fixed`. Amounts are in wei.

One bytecode, compiled for :data:`EVM_VERSION` ("prague", the newest fork both py-evm 0.12 and
anvil run), serves every chain. Each transaction is first run as an ``eth_call``, so a revert
raises :class:`ContractRevert` with the call's name and the contract's reason on eth-tester and
on JSON-RPC nodes alike, before anything is sent; it is then sent with a fixed gas limit,
:data:`GAS_LIMIT` (paying a full round of 64 uses about 0.95 M), since py-evm estimates gas by a
binary search that costs more than the transaction itself. Each transaction's gas used is
recorded in :attr:`ModelRepository.gas`.

Capsule models (Helium): :meth:`ModelRepository.post_model` may bind a model to a capsule,
given as the address of the capsule's signing key and the SHA-256 fingerprint of its key
record. Such a model's round closes only on :meth:`ModelRepository.settle_round`, carrying the
capsule's signature over :func:`settlement_digest`: how many of the round's first submitters
the capsule considered, the addresses it summed, and its 32-byte settlement digest. The
contract recovers the signer with ``ecrecover`` and refuses any other; anyone may send the
transaction. Authorising by sender would prove nothing on a development chain: its node
unlocks its accounts for every RPC client, and anvil lets any client impersonate any address
(``anvil_impersonateAccount``), the capsule's included. The digest binds the chain id, the
contract's address, the model, the round and the list, so a signature is not valid anywhere
else, and a round settles once. Once settled, the round refuses more gradients, and
:meth:`~ModelRepository.pay_round` pays only the summed addresses (:meth:`~ModelRepository.payees`).
A model without a capsule (Hydrogen) pays all its round's submitters, as before.

Threat model: everything on chain is public (CIDs, errors, who submitted, who was paid), so
only CIDs of encrypted gradients go there, never gradients. The chain enforces who may call
what, one gradient per address per round, the escrow and the payout arithmetic, and for a
capsule model that only the capsule's key decides whom a round pays (so the capsule key's
holder is trusted to sign only what it summed). It cannot check that the errors the owner
reports are true or that a CID holds a real gradient: as in Sonar, mines trust the owner's
evaluation and that the owner will pay at all.
"""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi import encode
from eth_utils import is_address, keccak, to_checksum_address
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from .chain import Chain

SOURCE = Path(__file__).parent / "contracts" / "model_repository.vy"
EVM_VERSION = "prague"
ERROR_SCALE = 10**6
MAX_CID_LENGTH = 64
MAX_CONTRIBUTORS = 64
GAS_LIMIT = 5_000_000
SETTLEMENT_TAG = keccak(b"om-teach/sonar-settlement/1")
"""The first word of every settlement digest, as the contract's ``SETTLEMENT_TAG``."""
ZERO_ADDRESS = "0x" + "00" * 20
_SETTLEMENT_TYPES = [
    "bytes32",  # SETTLEMENT_TAG
    "uint256",  # chain id
    "address",  # the contract
    "uint256",  # model id
    "uint256",  # round
    "uint256",  # considered: how many of the round's first submitters the capsule read
    "address[]",  # summed: whom the round pays
    "bytes32",  # settlement: the capsule's digest of its release
]
_RECORD = re.compile(r"[0-9a-fA-F]{64}")

_CIDV0 = re.compile(r"Qm[1-9A-HJ-NP-Za-km-z]{44}")
_CIDV1_BASE32 = re.compile(r"b[a-z2-7]{1,63}")


class ContractRevert(Exception):
    """A contract call reverted; ``call`` is the function, ``reason`` the contract's message."""

    def __init__(self, call: str, reason: str) -> None:
        super().__init__(f"{call} reverted: {reason}")
        self.call = call
        self.reason = reason


@functools.cache
def compile_contract() -> tuple[list[dict[str, Any]], str]:
    """The contract's ABI and deployment bytecode (hex, 0x-prefixed), compiled once a process."""
    import vyper
    from vyper.compiler.settings import Settings

    output = vyper.compile_code(
        SOURCE.read_text(),
        output_formats=["abi", "bytecode"],
        settings=Settings(evm_version=EVM_VERSION),
    )
    return output["abi"], output["bytecode"]


def to_fixed(error: float) -> int:
    """An error as the contract stores it: a non-negative integer, ``error`` × 10**6 rounded."""
    if isinstance(error, bool) or not isinstance(error, int | float):
        raise TypeError(f"an error must be a number, got {type(error).__name__}")
    if not math.isfinite(error) or error < 0:
        raise ValueError(f"an error must be finite and non-negative, got {error}")
    return round(error * ERROR_SCALE)


def from_fixed(value: int) -> float:
    """The inverse of :func:`to_fixed`."""
    return value / ERROR_SCALE


def check_cid(cid: str) -> str:
    """``cid`` if it is a CIDv0 (``Qm`` + 44 base58 characters) or a base32 CIDv1 of at most
    64 characters; otherwise ValueError/TypeError saying what is wrong."""
    if not isinstance(cid, str):
        raise TypeError(f"a CID must be a str, got {type(cid).__name__}")
    if not cid:
        raise ValueError("empty CID")
    if len(cid) > MAX_CID_LENGTH:
        raise ValueError(f"CID of {len(cid)} characters; the contract stores at most 64")
    if not (_CIDV0.fullmatch(cid) or _CIDV1_BASE32.fullmatch(cid)):
        raise ValueError(f"not a CIDv0 or base32 CIDv1: {cid!r}")
    return cid


def check_address(address: str, what: str = "address") -> str:
    """``address`` checksummed, if it is a 20-byte hex address; otherwise ValueError/TypeError
    naming ``what`` it was meant to be."""
    if not isinstance(address, str):
        raise TypeError(f"the {what} must be a str, got {type(address).__name__}")
    if not is_address(address):
        raise ValueError(f"the {what} is not an Ethereum address: {address!r}")
    return to_checksum_address(address)


def settlement_digest(
    chain_id: int,
    contract: str,
    model_id: int,
    round: int,
    considered: int,
    summed: Sequence[str],
    settlement: bytes,
) -> bytes:
    """The 32-byte hash the model's capsule signs to settle ``round``, exactly as the
    contract computes it: ``keccak256(abi_encode(SETTLEMENT_TAG, chain_id, contract, model_id,
    round, considered, summed, settlement))``. It is signed raw (``unsafe_sign_hash``), with
    no EIP-191 prefix."""
    if not isinstance(settlement, bytes) or len(settlement) != 32:
        raise ValueError(f"the settlement must be 32 bytes, got {settlement!r}")
    values = [
        SETTLEMENT_TAG,
        chain_id,
        check_address(contract, "contract"),
        model_id,
        round,
        considered,
        [check_address(a, "summed address") for a in summed],
        settlement,
    ]
    return keccak(encode(_SETTLEMENT_TYPES, values))


@dataclass(frozen=True)
class Event:
    """A decoded contract event."""

    name: str
    args: dict[str, Any]
    block: int


@dataclass(frozen=True)
class Transaction:
    """A mined transaction: which call, its hash, block, gas used and the events it emitted."""

    call: str
    tx_hash: str
    block: int
    gas_used: int
    events: tuple[Event, ...]
    receipt: Any


@dataclass(frozen=True)
class ModelInfo:
    """A model's state on chain; errors as floats, amounts in wei. ``capsule`` (the address of
    the capsule's signing key) and ``capsule_record`` (its key record's SHA-256, 64 lowercase
    hex characters) are None for a Hydrogen model."""

    model_id: int
    owner: str
    cid: str
    bounty: int
    remaining: int
    initial_error: float
    target_error: float
    best_error: float
    current_round: int
    capsule: str | None = None
    capsule_record: str | None = None


@dataclass(frozen=True)
class RoundResult:
    """A round's outcome: the new model's CID and error, and whether it was evaluated and paid."""

    cid: str
    error: float
    evaluated: bool
    paid: bool


def _reason(error: Exception) -> str:
    message = str(getattr(error, "message", None) or (error.args[0] if error.args else ""))
    message = message.removeprefix("execution reverted").removeprefix(":").strip()
    return message if message not in ("", "b''") else "no reason given"


def _revert_types() -> tuple[type[Exception], ...]:
    try:
        from eth_tester.exceptions import TransactionFailed
    except ImportError:
        return (ContractLogicError,)
    return (ContractLogicError, TransactionFailed)


class ModelRepository:
    """A client for one deployed ModelRepository on a :class:`~om_teach.sonar.chain.Chain`.

    Every transaction waits for its receipt, records its gas under the call's name in
    :attr:`gas`, and returns a :class:`Transaction`; a revert raises :class:`ContractRevert`.
    """

    def __init__(self, chain: Chain, contract: Contract, *, from_block: int = 0) -> None:
        self.chain = chain
        self.contract = contract
        self.from_block = from_block
        self.gas: dict[str, list[int]] = defaultdict(list)

    @property
    def address(self) -> str:
        return self.contract.address

    @classmethod
    def deploy(cls, chain: Chain, *, deployer: str | None = None) -> ModelRepository:
        """Deploy a new repository from ``deployer`` (the chain's first account by default)."""
        abi, bytecode = compile_contract()
        factory = chain.web3.eth.contract(abi=abi, bytecode=bytecode)
        sender = deployer or chain.accounts[0]
        receipt = chain.web3.eth.wait_for_transaction_receipt(
            factory.constructor().transact({"from": sender})
        )
        repository = cls.at(chain, receipt.contractAddress, from_block=receipt.blockNumber)
        repository.gas["deploy"].append(receipt.gasUsed)
        return repository

    @classmethod
    def at(
        cls, chain: Chain, address: str, *, from_block: int = 0, abi: list | None = None
    ) -> ModelRepository:
        """The repository already deployed at ``address`` (in block ``from_block`` or later,
        where :meth:`events` starts looking); ValueError if no code is there. A given ``abi``
        spares compiling the contract (seconds and ~20 MB in each mine process)."""
        web3 = chain.web3
        if not web3.is_address(address):
            raise ValueError(f"not an Ethereum address: {address!r}")
        address = web3.to_checksum_address(address)
        if not web3.eth.get_code(address):
            raise ValueError(f"no contract at {address} on {chain.name}")
        if abi is None:
            abi, _ = compile_contract()
        return cls(chain, web3.eth.contract(address=address, abi=abi), from_block=from_block)

    def transact(self, call: str, args: tuple, *, sender: str, value: int = 0) -> Transaction:
        """Send any contract function by name, with no client-side checks of its arguments:
        you probably want the named methods (``post_model`` and so on) instead."""
        function = getattr(self.contract.functions, call)(*args)
        params = {"from": sender, "value": value}
        try:
            function.call(params)
        except _revert_types() as error:
            raise ContractRevert(call, _reason(error)) from error
        tx_hash = function.transact({**params, "gas": GAS_LIMIT})
        receipt = self.chain.web3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt.status != 1:
            # Its preflight call passed, so a transaction mined before it in the same block
            # changed the state (two submissions racing): replay it on the block's final state.
            try:
                function.call(params, block_identifier=receipt.blockNumber)
            except _revert_types() as error:
                raise ContractRevert(call, _reason(error)) from error
            raise ContractRevert(call, "failed on chain; replaying it gave no reason")
        self.gas[call].append(receipt.gasUsed)
        return Transaction(
            call=call,
            tx_hash=receipt.transactionHash.to_0x_hex(),
            block=receipt.blockNumber,
            gas_used=receipt.gasUsed,
            events=self._decode(receipt),
            receipt=receipt,
        )

    def _decode(self, receipt: Any) -> tuple[Event, ...]:
        web3, events = self.chain.web3, self.contract.events
        by_topic = {web3.keccak(text=e.abi_element_identifier): e.event_name for e in events}
        decoded = []
        for log in receipt.logs:
            name = by_topic.get(log.topics[0]) if log.topics else None
            if log.address == self.address and name:
                data = events[name]().process_log(log)
                decoded.append(Event(name, dict(data.args), data.blockNumber))
        return tuple(decoded)

    def _view(self, call: str, *args: Any) -> Any:
        try:
            return getattr(self.contract.functions, call)(*args).call()
        except _revert_types() as error:
            raise ContractRevert(call, _reason(error)) from error

    def post_model(
        self,
        cid: str,
        *,
        bounty: int,
        initial_error: float,
        target_error: float,
        sender: str,
        capsule: str | None = None,
        capsule_record: str | None = None,
    ) -> tuple[int, Transaction]:
        """Post a model with a ``bounty`` in wei; returns its id and the transaction.

        With a ``capsule`` (the address of the capsule's signing key) and ``capsule_record``
        (the SHA-256 of its key record, 64 hex characters), both or neither, the model's
        rounds close and pay only on the capsule's signed settlement (:meth:`settle_round`).
        """
        if isinstance(bounty, bool) or not isinstance(bounty, int) or bounty <= 0:
            raise ValueError(f"the bounty must be a positive int of wei, got {bounty!r}")
        args = (check_cid(cid), to_fixed(initial_error), to_fixed(target_error))
        if (capsule is None) != (capsule_record is None):
            raise ValueError("a capsule and its record's fingerprint go together: give both")
        if capsule is not None:
            capsule = check_address(capsule, "capsule")
            if capsule == ZERO_ADDRESS:
                raise ValueError("the capsule cannot be the zero address")
            if not isinstance(capsule_record, str) or not _RECORD.fullmatch(capsule_record):
                raise ValueError(
                    "the capsule record's fingerprint must be its SHA-256 as 64 hex "
                    f"characters, got {capsule_record!r}"
                )
            record = bytes.fromhex(capsule_record)
            if record == bytes(32):
                raise ValueError("the capsule record's fingerprint cannot be all zeros")
            args += (capsule, record)
        tx = self.transact("post_model", args, sender=sender, value=bounty)
        (posted,) = [e for e in tx.events if e.name == "ModelPosted"]
        return posted.args["model_id"], tx

    def submit_gradient(self, model_id: int, round: int, cid: str, *, sender: str) -> Transaction:
        """Submit a gradient's CID for the model's current ``round``."""
        return self.transact("submit_gradient", (model_id, round, check_cid(cid)), sender=sender)

    def settle_round(
        self,
        model_id: int,
        round: int,
        *,
        considered: int,
        summed: Sequence[str],
        settlement: bytes,
        signature: bytes,
        sender: str,
    ) -> Transaction:
        """Close a capsule model's current ``round`` on the capsule's ``signature`` (65 bytes,
        r || s || v) over :func:`settlement_digest`: ``considered`` of its first submitters
        were read, ``summed`` are paid. Anyone may send it; only the signature counts."""
        if not isinstance(signature, bytes) or len(signature) != 65:
            raise ValueError(f"a signature is 65 bytes (r || s || v), got {signature!r}")
        if not isinstance(settlement, bytes) or len(settlement) != 32:
            raise ValueError(f"the settlement must be 32 bytes, got {settlement!r}")
        if isinstance(considered, bool) or not isinstance(considered, int) or considered < 0:
            raise ValueError(f"considered must be a non-negative int, got {considered!r}")
        if isinstance(summed, str):
            raise TypeError("summed must be a sequence of addresses, not one str")
        addresses = [check_address(a, "summed address") for a in summed]
        v = signature[64] + 27 if signature[64] < 27 else signature[64]
        args = (model_id, round, considered, addresses, settlement, v)
        return self.transact(
            "settle_round", (*args, signature[:32], signature[32:64]), sender=sender
        )

    def evaluate_round(
        self, model_id: int, round: int, cid: str, error: float, *, sender: str
    ) -> Transaction:
        """Record the round's new model (its CID) and its error; opens the next round. A
        capsule model's round must be settled first."""
        args = (model_id, round, check_cid(cid), to_fixed(error))
        return self.transact("evaluate_round", args, sender=sender)

    def pay_round(self, model_id: int, round: int, *, sender: str) -> Transaction:
        """Pay an evaluated round's :meth:`payees`; its ``Paid`` events say who got what."""
        return self.transact("pay_round", (model_id, round), sender=sender)

    def withdraw_bounty(self, model_id: int, *, sender: str) -> Transaction:
        """Return the escrow that is left to the model's owner."""
        return self.transact("withdraw_bounty", (model_id,), sender=sender)

    def model_count(self) -> int:
        return self._view("model_count")

    def model(self, model_id: int) -> ModelInfo:
        owner, cid, bounty, remaining, initial, target, best, current, capsule, record = self._view(
            "model_info", model_id
        )
        return ModelInfo(
            model_id=model_id,
            owner=owner,
            cid=cid,
            bounty=bounty,
            remaining=remaining,
            initial_error=from_fixed(initial),
            target_error=from_fixed(target),
            best_error=from_fixed(best),
            current_round=current,
            capsule=None if capsule == ZERO_ADDRESS else capsule,
            capsule_record=None if record == bytes(32) else record.hex(),
        )

    def current_round(self, model_id: int) -> int:
        return self._view("current_round", model_id)

    def model_cid(self, model_id: int) -> str:
        """The CID of the best model so far."""
        return self._view("model_cid", model_id)

    def best_error(self, model_id: int) -> float:
        return from_fixed(self._view("best_error", model_id))

    def remaining_bounty(self, model_id: int) -> int:
        return self._view("remaining_bounty", model_id)

    def gradient_cids(self, model_id: int, round: int) -> list[str]:
        return self._view("gradient_cids", model_id, round)

    def submitters(self, model_id: int, round: int) -> list[str]:
        return self._view("submitters", model_id, round)

    def round_result(self, model_id: int, round: int) -> RoundResult:
        cid, error, evaluated, paid = self._view("round_result", model_id, round)
        return RoundResult(cid, from_fixed(error), evaluated, paid)

    def payees(self, model_id: int, round: int) -> list[str]:
        """Whom :meth:`pay_round` pays: a Hydrogen round's submitters, a capsule round's
        summed addresses (none until it is settled)."""
        return self._view("payees", model_id, round)

    def round_settlement(self, model_id: int, round: int) -> tuple[bool, int, bytes]:
        """Whether the round is closed to gradients (settled; a Hydrogen round once
        evaluated), how many submitters the capsule considered, and its settlement digest."""
        closed, considered, settlement = self._view("round_settlement", model_id, round)
        return closed, considered, bytes(settlement)

    def round_payout(self, model_id: int, round: int) -> int:
        """What an evaluated round is owed in total (wei), before the equal split."""
        return self._view("round_payout", model_id, round)

    def events(self, name: str, *, from_block: int | None = None, **filters: Any) -> list[Event]:
        """The contract's ``name`` events since ``from_block`` (by default its deployment),
        filtered on indexed arguments (e.g. ``events("GradientSubmitted", model_id=0, round=2)``).
        """
        names = {e.event_name for e in self.contract.events}
        if name not in names:
            raise ValueError(f"the contract has no event {name!r}; it has {sorted(names)}")
        logs = self.contract.events[name]().get_logs(
            from_block=self.from_block if from_block is None else from_block,
            argument_filters=filters or None,
        )
        return [Event(log.event, dict(log.args), log.blockNumber) for log in logs]
