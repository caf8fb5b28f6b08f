"""Secure aggregation after Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving
Machine Learning", CCS 2017: the honest-but-curious version of their protocol.

Each client masks its vector twice before sending it. For every other client v it adds (or, when
its id is the larger, subtracts) a pairwise mask PRG(s_uv), where s_uv comes from an X25519 key
agreement both ends can do, so the pairwise masks cancel in the sum. It also adds a self-mask
PRG(b_u) from a fresh seed b_u. In advance it Shamir-shares (t of n) both b_u and its mask private
key s_sk_u among the other clients, each share encrypted with AES-GCM under a key the two clients
agree with a second X25519 key pair. The server then recovers, for each client, exactly one kind
of secret: b_u for clients whose masked vector arrived (to strip their self-masks), s_sk_v for
clients that dropped out before sending it (to rebuild and strip the pairwise masks that the
survivors added for them). The sum of the survivors' inputs is what is left.

Threat model
    Parties: n clients, each holding a vector x_u in Z_{2^k}, and one server that relays every
    message (clients never talk directly). All parties follow the protocol but are curious: they
    pool what they see. The server may collude with up to t-1 clients (t is the Shamir threshold).

    The server learns the sum mod 2^k of the inputs of the clients whose masked vectors it
    received (``survivors``) and nothing else about any input, including the inputs of clients
    that dropped out; colluding clients add only their own inputs. Clients learn nothing about
    other clients' inputs: they see public keys, ciphertexts addressed to them and lists of who is
    still there, and never the sum. Outside the model: what the sum itself reveals (add noise for
    that), who took part, and a server that lies about dropouts to different clients, which the
    paper's actively secure version stops with signatures and a consistency round. One active
    deviation is stopped here as in the paper: an honest client never reveals both a b-share and
    an s_sk-share of the same client (:meth:`Client.unmask`), since the two together unmask that
    client's input, for instance a slow client's that the server first declared dropped.

The protocol is correct whichever clients drop out at whichever round, as long as at least t are
left at each step; below t every party stops with :class:`SecAggError`.

Masks are expanded from 32-byte seeds with AES-256 in counter mode (:func:`prg`). A mask must be a
cryptographic PRG: its output is indistinguishable from uniform for anyone without the seed,
which is what hides an input. PCG64 and Philox are statistical generators whose outputs can give
away their state, and so the rest of the mask. AES-CTR is also fast: with AES-NI, OpenSSL expands
a seed at several GB/s in one call that numpy reads without a copy.

The code is shaped like Flower's SecAgg+ workflow: a :class:`Client` and a :class:`Server` with
one method per round (:data:`ROUNDS`), exchanging plain data (ints, bytes, numpy arrays) whose
wire size each message reports as ``nbytes``. :func:`run_secagg` runs them all in one process,
with clients dropping out where asked.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import ArrayLike

from .sharing import PRIME, ShamirShare, shamir_reconstruct, shamir_split

ROUNDS = ("advertise_keys", "share_keys", "masked_input", "unmask")
"""The protocol's rounds in order: one method each on :class:`Client` and :class:`Server`."""

KEY_BYTES = 32
ID_BYTES = 4
FIELD_BYTES = (PRIME.bit_length() + 7) // 8
NONCE_BYTES = 12


class SecAggError(RuntimeError):
    """The protocol cannot go on: too few clients are left, or a message broke a rule."""


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not 1 <= bits <= 64:
        raise ValueError(f"bits must be an integer from 1 to 64 (the ring Z_2^bits), got {bits!r}")


def _dtype(bits: int) -> np.dtype:
    """The narrowest unsigned dtype that holds Z_{2^bits}; numpy's wrap-around does the rest."""
    return np.dtype(f"uint{max(8, 1 << math.ceil(math.log2(bits)))}")


def _ring_mask(bits: int) -> int:
    return (1 << bits) - 1


def to_ring(values: ArrayLike, *, bits: int = 32) -> np.ndarray:
    """``values`` as a vector of Z_{2^bits}, after checking that each is an integer in range."""
    _check_bits(bits)
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"an input must be a 1-d vector, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(f"inputs must be integers in Z_2^{bits}, got dtype {array.dtype}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > _ring_mask(bits)):
        raise ValueError(f"inputs must lie in [0, 2^{bits}), got [{array.min()}, {array.max()}]")
    return array.astype(_dtype(bits))


def prg(seed: bytes, length: int, *, bits: int = 32) -> np.ndarray:
    """``length`` pseudorandom elements of Z_{2^bits} expanded from a 32-byte seed by AES-256-CTR.

    A seed always expands to the same mask, which is how both ends of a pair (and later the
    server) agree on it; nothing secret is encrypted, so a fixed counter block is safe.
    """
    _check_bits(bits)
    if len(seed) != KEY_BYTES:
        raise ValueError(f"a PRG seed is {KEY_BYTES} bytes, got {len(seed)}")
    dtype = _dtype(bits)
    stream = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    out = np.frombuffer(stream.update(bytes(length * dtype.itemsize)), dtype=dtype)
    return out & dtype.type(_ring_mask(bits)) if bits < 8 * dtype.itemsize else out


def _derive(shared_secret: bytes, purpose: bytes, round_id: int, context: bytes) -> bytes:
    info = b"om-teach secagg " + purpose + _bound(round_id, context)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(
        shared_secret
    )


def _bound(round_id: int, context: bytes) -> bytes:
    """The round and the context that every key and ciphertext of a run is bound to."""
    return round_id.to_bytes(8, "big") + hashlib.sha256(context).digest()


def pairwise_seed(
    private_key: bytes, peer_public_key: bytes, *, round_id: int = 0, context: bytes = b""
) -> bytes:
    """The seed of the mask two clients share: HKDF-SHA256 of their X25519 agreement (either end
    gets the same seed from its own private key and the other's public key)."""
    shared = X25519PrivateKey.from_private_bytes(private_key).exchange(
        X25519PublicKey.from_public_bytes(peer_public_key)
    )
    return _derive(shared, b"mask", round_id, context)


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _header(sender: int, receiver: int) -> bytes:
    return sender.to_bytes(ID_BYTES, "big") + receiver.to_bytes(ID_BYTES, "big")


def _associated_data(round_id: int, context: bytes, sender: int, receiver: int) -> bytes:
    """What each share ciphertext is bound to: the aggregation round and its context, its
    sender and receiver."""
    return _bound(round_id, context) + _header(sender, receiver)


def _check_count(count: int, threshold: int, what: str) -> None:
    if count < threshold:
        raise SecAggError(
            f"aborting: {what}: {count} client(s), fewer than the threshold t={threshold}"
        )


@dataclass(frozen=True)
class AdvertisedKeys:
    """Round 1, client to server, then broadcast by the server: a client's two public keys."""

    client_id: int
    c_pk: bytes  # agrees the keys that encrypt shares
    s_pk: bytes  # agrees the pairwise masks

    @property
    def nbytes(self) -> int:
        return ID_BYTES + len(self.c_pk) + len(self.s_pk)


@dataclass(frozen=True, slots=True)
class EncryptedShares:
    """Round 2, client to client through the server: the sender's shares of its b and s_sk for
    the receiver, as nonce || AES-GCM ciphertext and tag."""

    sender: int
    receiver: int
    ciphertext: bytes

    @property
    def nbytes(self) -> int:
        return 2 * ID_BYTES + len(self.ciphertext)


@dataclass(frozen=True)
class MaskedInput:
    """Round 3, client to server: the input plus the self-mask and the pairwise masks."""

    client_id: int
    vector: np.ndarray
    bits: int

    @property
    def nbytes(self) -> int:
        """Bytes on the wire with the elements packed at ``bits`` bits each."""
        return ID_BYTES + math.ceil(self.bits * len(self.vector) / 8)


@dataclass(frozen=True)
class UnmaskRequest:
    """Round 4, server to clients: whose masked input arrived, and who dropped before sending it."""

    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return ID_BYTES * (len(self.survivors) + len(self.dropped))


@dataclass(frozen=True)
class UnmaskResponse:
    """Round 4, client to server: its b-shares of the survivors, its s_sk-shares of the dropped."""

    client_id: int
    b_shares: Mapping[int, ShamirShare]
    sk_shares: Mapping[int, ShamirShare]

    @property
    def nbytes(self) -> int:
        shares = [*self.b_shares.values(), *self.sk_shares.values()]
        return ID_BYTES + sum(2 * ID_BYTES + FIELD_BYTES * len(s.y) for s in shares)


def _check_ids(ids: Iterable[int], what: str) -> list[int]:
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise SecAggError(f"{what} names a client more than once: {sorted(ids)}")
    return ids


class Client:
    """One client: call :meth:`advertise_keys`, :meth:`share_keys`, :meth:`masked_input` and
    :meth:`unmask` in that order, each with what the server sent.

    Keys, seeds and nonces come from the operating system unless ``rng`` is given; a seeded
    ``rng`` makes a run reproducible for teaching and is not secure. ``context`` (the model the
    round trains, by content address, say) is bound into every pairwise mask and share
    ciphertext: two clients that were given different contexts cannot open each other's shares,
    so neither goes on to send a masked input.
    """

    def __init__(
        self,
        client_id: int,
        vector: ArrayLike,
        *,
        threshold: int,
        bits: int = 32,
        round_id: int = 0,
        context: bytes = b"",
        rng: np.random.Generator | None = None,
    ) -> None:
        if not isinstance(client_id, int) or not 0 <= client_id < 2 ** (8 * ID_BYTES):
            raise ValueError(f"a client id is an integer in [0, 2^32), got {client_id!r}")
        if not isinstance(threshold, int) or threshold < 2:
            raise ValueError(f"threshold must be an integer of at least 2, got {threshold!r}")
        self.client_id = client_id
        self.threshold = threshold
        self.bits = bits
        self.round_id, self.context = round_id, bytes(context)
        self.vector = to_ring(vector, bits=bits)
        self._rng = rng
        self._c_sk = X25519PrivateKey.from_private_bytes(self._random(KEY_BYTES))
        self._s_sk = X25519PrivateKey.from_private_bytes(self._random(KEY_BYTES))
        self._b = self._random(KEY_BYTES)
        self._done: list[str] = []
        self._roster: dict[int, AdvertisedKeys] = {}
        self._x: dict[int, int] = {}
        self._channels: dict[int, AESGCM] = {}
        self._held: dict[int, tuple[int, int]] = {}  # owner -> (b-share, s_sk-share) held for it
        self._revealed_b: set[int] = set()
        self._revealed_sk: set[int] = set()

    def _random(self, n: int) -> bytes:
        return os.urandom(n) if self._rng is None else self._rng.bytes(n)

    def _enter(self, stage: str) -> None:
        expected = ROUNDS[len(self._done)] if len(self._done) < len(ROUNDS) else "unmask"
        if stage != expected:
            raise SecAggError(f"client {self.client_id}: {stage} called out of order")
        if stage not in self._done:
            self._done.append(stage)

    def _channel(self, peer: int) -> AESGCM:
        if peer not in self._channels:
            peer_pk = X25519PublicKey.from_public_bytes(self._roster[peer].c_pk)
            key = _derive(
                self._c_sk.exchange(peer_pk), b"share encryption", self.round_id, self.context
            )
            self._channels[peer] = AESGCM(key)
        return self._channels[peer]

    def advertise_keys(self) -> AdvertisedKeys:
        """Round 1: send the public halves of the encryption key pair c and the mask key pair s."""
        self._enter("advertise_keys")
        return AdvertisedKeys(self.client_id, _public_bytes(self._c_sk), _public_bytes(self._s_sk))

    def share_keys(self, roster: Sequence[AdvertisedKeys]) -> list[EncryptedShares]:
        """Round 2: Shamir-share b and s_sk among the clients in ``roster`` (U1), one share pair
        per client, each encrypted for its receiver."""
        self._enter("share_keys")
        ids = _check_ids((k.client_id for k in roster), "the key roster")
        if self.client_id not in ids:
            raise SecAggError(f"client {self.client_id} is missing from the key roster")
        _check_count(len(ids), self.threshold, "keys advertised")
        for keys in roster:
            if len(keys.c_pk) != KEY_BYTES or len(keys.s_pk) != KEY_BYTES:
                raise SecAggError(f"client {keys.client_id} advertised a malformed public key")
        if len({k.s_pk for k in roster}) != len(ids) or len({k.c_pk for k in roster}) != len(ids):
            raise SecAggError("two clients advertised the same public key")
        self._roster = {k.client_id: k for k in roster}
        self._x = {v: i + 1 for i, v in enumerate(sorted(ids))}
        secrets = [
            int.from_bytes(self._b, "big"),
            int.from_bytes(self._s_sk.private_bytes_raw(), "big"),
        ]
        coins = None if self._rng is None else random.Random(self._random(KEY_BYTES))
        shares = shamir_split(secrets, len(ids), self.threshold, rng=coins)
        out = []
        for v, x in self._x.items():
            b_share, sk_share = shares[x - 1].y
            if v == self.client_id:
                self._held[v] = (b_share, sk_share)
                continue
            plaintext = (
                _header(self.client_id, v)
                + b_share.to_bytes(FIELD_BYTES, "big")
                + sk_share.to_bytes(FIELD_BYTES, "big")
            )
            nonce = self._random(NONCE_BYTES)
            sealed = self._channel(v).encrypt(
                nonce, plaintext, _associated_data(self.round_id, self.context, self.client_id, v)
            )
            out.append(EncryptedShares(self.client_id, v, nonce + sealed))
        return out

    def masked_input(self, inbox: Sequence[EncryptedShares]) -> MaskedInput:
        """Round 3: decrypt the shares the other clients of U2 sent, then send
        x + PRG(b) + sum over v in U2 of ±PRG(s_uv)."""
        self._enter("masked_input")
        for message in inbox:
            self._receive(message)
        _check_count(len(self._held), self.threshold, "shares received (U2, with this client)")
        length = len(self.vector)
        masked = self.vector + self._self_mask(length)
        s_sk = self._s_sk.private_bytes_raw()
        for v in self._held:
            if v == self.client_id:
                continue
            mask = prg(
                pairwise_seed(
                    s_sk, self._roster[v].s_pk, round_id=self.round_id, context=self.context
                ),
                length,
                bits=self.bits,
            )
            masked = masked + mask if self.client_id < v else masked - mask
        return MaskedInput(
            self.client_id, masked & masked.dtype.type(_ring_mask(self.bits)), self.bits
        )

    def _self_mask(self, length: int) -> np.ndarray:
        """PRG(b): hides the input from a server that learns this client's pairwise masks."""
        return prg(self._b, length, bits=self.bits)

    def _receive(self, message: EncryptedShares) -> None:
        sender = message.sender
        if message.receiver != self.client_id:
            raise SecAggError(
                f"client {self.client_id} was handed shares addressed to {message.receiver}"
            )
        if sender not in self._roster or sender == self.client_id or sender in self._held:
            raise SecAggError(f"client {self.client_id} got unexpected shares from {sender}")
        nonce, sealed = message.ciphertext[:NONCE_BYTES], message.ciphertext[NONCE_BYTES:]
        try:
            plaintext = self._channel(sender).decrypt(
                nonce,
                sealed,
                _associated_data(self.round_id, self.context, sender, self.client_id),
            )
        except InvalidTag:
            raise SecAggError(
                f"client {self.client_id}: the shares from client {sender} failed AES-GCM "
                "authentication (tampered with, not sent by that client to this one, or sent "
                "for another round or context: another model)"
            ) from None
        if plaintext[: 2 * ID_BYTES] != _header(sender, self.client_id):
            raise SecAggError(f"client {self.client_id}: shares from {sender} name other clients")
        body = plaintext[2 * ID_BYTES :]
        self._held[sender] = (
            int.from_bytes(body[:FIELD_BYTES], "big"),
            int.from_bytes(body[FIELD_BYTES:], "big"),
        )

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Round 4: reveal b-shares of the survivors and s_sk-shares of the dropped.

        Refuses (:class:`SecAggError`) any request that would give the server both kinds of share
        for one client, in this request or together with an earlier one.
        """
        self._enter("unmask")
        self._check_request(request)
        x = self._x[self.client_id]
        b_shares = {v: ShamirShare(x, (self._held[v][0],)) for v in request.survivors}
        sk_shares = {v: ShamirShare(x, (self._held[v][1],)) for v in request.dropped}
        self._revealed_b.update(request.survivors)
        self._revealed_sk.update(request.dropped)
        return UnmaskResponse(self.client_id, b_shares, sk_shares)

    def _check_request(self, request: UnmaskRequest) -> None:
        me = self.client_id
        survivors = set(_check_ids(request.survivors, "the unmask request's survivors"))
        dropped = set(_check_ids(request.dropped, "the unmask request's dropped clients"))
        if both := survivors & dropped:
            raise SecAggError(
                f"client {me} refuses to unmask: the request lists client(s) {sorted(both)} as "
                "both surviving and dropped, and both shares would reveal their input"
            )
        if unknown := (survivors | dropped) - set(self._held):
            raise SecAggError(
                f"client {me} holds no shares of client(s) {sorted(unknown)} (not in U2)"
            )
        if me in dropped:
            raise SecAggError(
                f"client {me} refuses: it sent its masked input, yet is listed dropped"
            )
        if was_dropped := survivors & self._revealed_sk:
            raise SecAggError(
                f"client {me} refuses to unmask: it was told earlier that client(s) "
                f"{sorted(was_dropped)} dropped and revealed their s_sk-shares; their b-shares "
                "would reveal their input"
            )
        if was_survivor := dropped & self._revealed_b:
            raise SecAggError(
                f"client {me} refuses to unmask: it was told earlier that client(s) "
                f"{sorted(was_survivor)} survived and revealed their b-shares; their s_sk-shares "
                "would reveal their input"
            )
        _check_count(len(survivors), self.threshold, "survivors in the unmask request (U3)")


class Server:
    """The server: call :meth:`advertise_keys`, :meth:`share_keys`, :meth:`masked_input` and
    :meth:`unmask` in that order, each with the messages the clients sent in that round; each
    returns what to send on. After :meth:`unmask`, ``survivors`` are the clients whose inputs
    the sum holds."""

    def __init__(
        self,
        *,
        threshold: int,
        vector_length: int,
        bits: int = 32,
        round_id: int = 0,
        context: bytes = b"",
    ) -> None:
        _check_bits(bits)
        if not isinstance(threshold, int) or threshold < 2:
            raise ValueError(f"threshold must be an integer of at least 2, got {threshold!r}")
        if vector_length < 1:
            raise ValueError(f"vector_length must be positive, got {vector_length}")
        self.threshold = threshold
        self.vector_length = vector_length
        self.bits = bits
        self.round_id, self.context = round_id, bytes(context)
        self.keys: dict[int, AdvertisedKeys] = {}  # U1
        self.senders: list[int] = []  # U2
        self.masked: dict[int, np.ndarray] = {}  # U3
        self.survivors: tuple[int, ...] = ()
        self.dropped: tuple[int, ...] = ()

    def advertise_keys(self, keys: Sequence[AdvertisedKeys]) -> tuple[AdvertisedKeys, ...]:
        """Round 1: collect the public keys (U1) and return the roster to broadcast."""
        ids = _check_ids((k.client_id for k in keys), "the advertised keys")
        _check_count(len(ids), self.threshold, "round advertise_keys, keys received (U1)")
        self.keys = {k.client_id: k for k in sorted(keys, key=lambda k: k.client_id)}
        return tuple(self.keys.values())

    def share_keys(
        self, messages: Sequence[Sequence[EncryptedShares]]
    ) -> dict[int, list[EncryptedShares]]:
        """Round 2: collect each client's encrypted shares (its senders are U2) and return, for
        each client of U2, the ciphertexts addressed to it."""
        senders = _check_ids((batch[0].sender for batch in messages if batch), "share senders")
        if stray := set(senders) - set(self.keys):
            raise SecAggError(f"shares from client(s) {sorted(stray)} that advertised no keys")
        _check_count(
            len(senders), self.threshold, "round share_keys, clients that sent shares (U2)"
        )
        inboxes: dict[int, list[EncryptedShares]] = {v: [] for v in sorted(senders)}
        for batch in messages:
            for message in batch:
                if message.sender != batch[0].sender or message.receiver not in self.keys:
                    raise SecAggError(f"malformed shares from client {batch[0].sender}")
                if message.receiver in inboxes:
                    inboxes[message.receiver].append(message)
        self.senders = sorted(senders)
        return inboxes

    def masked_input(self, vectors: Sequence[MaskedInput]) -> UnmaskRequest:
        """Round 3: collect the masked inputs (U3); ask for b-shares of U3 and s_sk-shares of
        U2 - U3."""
        ids = _check_ids((m.client_id for m in vectors), "the masked inputs")
        if stray := set(ids) - set(self.senders):
            raise SecAggError(f"masked input from client(s) {sorted(stray)} that sent no shares")
        _check_count(len(ids), self.threshold, "round masked_input, masked inputs received (U3)")
        for m in vectors:
            if len(m.vector) != self.vector_length or m.bits != self.bits:
                raise SecAggError(f"client {m.client_id} sent a vector of the wrong shape or ring")
        self.masked = {m.client_id: m.vector for m in vectors}
        self.survivors = tuple(sorted(ids))
        self.dropped = tuple(v for v in self.senders if v not in self.masked)
        return UnmaskRequest(self.survivors, self.dropped)

    def unmask(self, responses: Sequence[UnmaskResponse]) -> np.ndarray:
        """Round 4: rebuild b of each survivor and s_sk of each dropped client from t responses,
        strip the masks, and return the survivors' sum in Z_{2^bits}."""
        ids = _check_ids((r.client_id for r in responses), "the unmask responses")
        if stray := set(ids) - set(self.survivors):
            raise SecAggError(f"unmask responses from client(s) {sorted(stray)} outside U3")
        _check_count(len(ids), self.threshold, "round unmask, responses received")
        x = {v: i + 1 for i, v in enumerate(self.keys)}
        chosen = sorted(responses, key=lambda r: r.client_id)[: self.threshold]
        for r in chosen:
            if set(r.b_shares) != set(self.survivors) or set(r.sk_shares) != set(self.dropped):
                raise SecAggError(f"client {r.client_id} answered a different unmask request")
            if any(s.x != x[r.client_id] for s in [*r.b_shares.values(), *r.sk_shares.values()]):
                raise SecAggError(f"client {r.client_id} sent shares at the wrong point")
        dtype = _dtype(self.bits)
        total = np.zeros(self.vector_length, dtype=dtype)
        for vector in self.masked.values():
            total += vector
        for b in self._rebuild(chosen, "b_shares", self.survivors):
            total -= prg(b.to_bytes(KEY_BYTES, "big"), self.vector_length, bits=self.bits)
        for v, sk in zip(
            self.dropped, self._rebuild(chosen, "sk_shares", self.dropped), strict=True
        ):
            s_sk = sk.to_bytes(KEY_BYTES, "big")
            if _public_bytes(X25519PrivateKey.from_private_bytes(s_sk)) != self.keys[v].s_pk:
                raise SecAggError(f"the rebuilt mask key of client {v} does not match its s_pk")
            for u in self.survivors:
                seed = pairwise_seed(
                    s_sk, self.keys[u].s_pk, round_id=self.round_id, context=self.context
                )
                mask = prg(seed, self.vector_length, bits=self.bits)
                if u < v:  # u added PRG(s_uv) for v, which never sent its own -PRG(s_uv)
                    total -= mask
                else:
                    total += mask
        return total & dtype.type(_ring_mask(self.bits))

    def _rebuild(
        self, chosen: list[UnmaskResponse], kind: str, owners: tuple[int, ...]
    ) -> list[int]:
        """Every owner's secret at once: the t responders hold shares at the same points, so
        their shares of all owners stack into one vector secret and one interpolation."""
        if not owners:
            return []
        stacked = [
            ShamirShare(
                getattr(r, kind)[owners[0]].x, tuple(getattr(r, kind)[v].y[0] for v in owners)
            )
            for r in chosen
        ]
        secrets = shamir_reconstruct(stacked, self.threshold)
        if any(s >= 1 << (8 * KEY_BYTES) for s in secrets):
            raise SecAggError(f"rebuilt {kind} secrets out of range: the shares are inconsistent")
        return secrets


@dataclass(frozen=True)
class ServerView:
    """Every message the server received in one run: what a curious server can work from."""

    keys: tuple[AdvertisedKeys, ...]
    shares: tuple[EncryptedShares, ...]
    masked: tuple[MaskedInput, ...]
    responses: tuple[UnmaskResponse, ...]


@dataclass(frozen=True)
class SecAggResult:
    """What :func:`run_secagg` returns: the sum, whose inputs it holds, and the run's costs."""

    total: np.ndarray
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]  # sent shares but no masked input: their masks were rebuilt
    client_bytes: dict[int, int]  # bytes each client sent, over the rounds it took part in
    server_bytes: int  # bytes the server sent, each broadcast counted once per receiver
    client_seconds: dict[int, float]
    server_seconds: float
    view: ServerView


def run_secagg(
    inputs: Sequence[ArrayLike],
    threshold: int,
    *,
    bits: int = 32,
    drop_after: Mapping[str, Iterable[int]] | None = None,
    seed: int | None = None,
    round_id: int = 0,
) -> SecAggResult:
    """Run the protocol in process for clients 0..n-1 holding ``inputs`` (vectors in Z_2^bits).

    ``drop_after`` maps a round to the clients that go silent once they have answered it:
    ``"advertise_keys"`` (they never send shares), ``"share_keys"`` (they never send a masked
    input, so the server rebuilds their masks) or ``"masked_input"`` (they drop during unmasking,
    never answering its request). ``seed`` makes the run reproducible and insecure; by default
    every key and seed comes from the operating system.
    """
    drop_after = dict(drop_after or {})
    if bad := set(drop_after) - set(ROUNDS[:3]):
        raise ValueError(f"drop_after rounds must be among {ROUNDS[:3]}, got {sorted(bad)}")
    gone: dict[str, set[int]] = {r: set(drop_after.get(r, ())) for r in ROUNDS[:3]}
    listed = [u for r in ROUNDS[:3] for u in gone[r]]
    if len(listed) != len(set(listed)) or not set(listed) <= set(range(len(inputs))):
        raise ValueError(
            f"drop_after must name each of the clients 0..{len(inputs) - 1} at most once"
        )
    if threshold > len(inputs):
        raise ValueError(f"threshold t={threshold} exceeds the {len(inputs)} clients")
    vectors = [to_ring(x, bits=bits) for x in inputs]
    if len({len(v) for v in vectors}) != 1:
        raise ValueError("all inputs must have the same length")
    client_seconds = dict.fromkeys(range(len(inputs)), 0.0)
    client_bytes = dict.fromkeys(range(len(inputs)), 0)
    server_seconds, server_bytes = 0.0, 0

    def call(u: int, method, *args):
        start = time.perf_counter()
        message = method(*args)
        client_seconds[u] += time.perf_counter() - start
        messages = message if isinstance(message, list) else [message]
        client_bytes[u] += sum(m.nbytes for m in messages)
        return message

    def serve(method, *args):
        nonlocal server_seconds
        start = time.perf_counter()
        out = method(*args)
        server_seconds += time.perf_counter() - start
        return out

    clients = {
        u: Client(
            u,
            v,
            threshold=threshold,
            bits=bits,
            round_id=round_id,
            rng=None if seed is None else np.random.default_rng([seed, u]),
        )
        for u, v in enumerate(vectors)
    }
    server = Server(
        threshold=threshold, vector_length=len(vectors[0]), bits=bits, round_id=round_id
    )

    keys = [call(u, c.advertise_keys) for u, c in clients.items()]
    roster = serve(server.advertise_keys, keys)
    server_bytes += len(roster) * sum(k.nbytes for k in roster)
    live = [u for u in clients if u not in gone["advertise_keys"]]

    shares = [call(u, clients[u].share_keys, roster) for u in live]
    inboxes = serve(server.share_keys, shares)
    server_bytes += sum(m.nbytes for inbox in inboxes.values() for m in inbox)
    live = [u for u in live if u not in gone["share_keys"]]

    masked = [call(u, clients[u].masked_input, inboxes[u]) for u in live]
    request = serve(server.masked_input, masked)
    server_bytes += len(request.survivors) * request.nbytes
    live = [u for u in live if u not in gone["masked_input"]]

    responses = [call(u, clients[u].unmask, request) for u in live]
    total = serve(server.unmask, responses)
    view = ServerView(
        tuple(keys), tuple(m for batch in shares for m in batch), tuple(masked), tuple(responses)
    )
    return SecAggResult(
        total,
        server.survivors,
        server.dropped,
        client_bytes,
        server_bytes,
        client_seconds,
        server_seconds,
        view,
    )


def quantize(
    values: ArrayLike,
    *,
    clipping_range: float,
    target_range: int,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Floats to integers in [0, target_range], as Flower's SecAgg+ does: clip to
    [-clipping_range, clipping_range], scale, and round stochastically (unbiased rounding)."""
    if not clipping_range > 0:
        raise ValueError(f"clipping_range must be positive, got {clipping_range}")
    if not isinstance(target_range, int) or target_range < 1:
        raise ValueError(f"target_range must be a positive integer, got {target_range!r}")
    rng = np.random.default_rng() if rng is None else rng
    values = np.asarray(values, dtype=float)
    scaled = (np.clip(values, -clipping_range, clipping_range) + clipping_range) * (
        target_range / (2 * clipping_range)
    )
    floor = np.floor(scaled)
    rounded = floor + (rng.random(scaled.shape) < scaled - floor)
    return np.minimum(rounded, target_range).astype(np.uint64)


def dequantize(
    total: ArrayLike, *, clipping_range: float, target_range: int, count: int, bits: int = 32
) -> np.ndarray:
    """The float sum of ``count`` quantized vectors, from their sum in Z_2^bits.

    Refuses when ``count * target_range`` does not fit the ring: the sum could have wrapped.
    """
    _check_bits(bits)
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    if count * target_range > _ring_mask(bits):
        raise ValueError(
            f"{count} values of up to {target_range} can sum past 2^{bits}: "
            "lower target_range or use more bits"
        )
    step = 2 * clipping_range / target_range
    return np.asarray(total, dtype=float) * step - count * clipping_range
