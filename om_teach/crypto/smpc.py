"""Secure multi-party computation on secret-shared fixed-point tensors, with a trusted dealer.

n >= 2 parties hold additive shares (:mod:`om_teach.crypto.sharing`) of every value in the ring
Z_{2^64}. Addition is local. Multiplication uses Beaver triples (Beaver, "Efficient multiparty
protocols using circuit randomization", CRYPTO 1991), and matrix products use matrix triples.
A dealer hands out this correlated randomness. Comparison, ReLU, argmax and a classifier's
accuracy are built on these operations.

Threat model:

- The parties are honest but curious: they follow the protocol, and any of them may pool
  everything they receive. A coalition of up to n - 1 parties learns nothing beyond its own
  inputs and the values revealed on purpose. Every value opened along the way is masked by
  dealer randomness that is uniform over its ring, and the coalition lacks a share of that
  mask. A party's view is therefore identically distributed for any two inputs that give the
  same revealed output. The tests check this by enumerating every random choice on Z_8.
- The dealer is trusted to draw fresh, correct randomness and not to collude with any party.
  It receives only the kinds and shapes of the requests, never a share of data.
- Public: the shapes, the sequence of operations and the number of rounds.
- Not covered: malicious parties. There are no MACs, so a party that lies about its share
  changes the result undetected (SPDZ, Damgård et al., CRYPTO 2012, adds them). Both
  transports here are local and unencrypted; parties on different machines need TLS.

Fixed point and truncation: a real x is stored as round(x * 2^f) mod 2^64, in two's
complement, with f = FRACTION_BITS = 12. A product carries 2f fractional bits, and truncation
divides it by 2^f. This is probabilistic truncation (Catrina and Saxena, "Secure computation
with fixed-point numbers", FC 2010) with a dealer pair (r, r >> f), where r is uniform over
the whole ring. The parties open c = x + 2^k + r, which is uniform and so hides x perfectly,
and keep (c >> f) - 2^(k-f) - (r >> f). For |x| < 2^k the result is floor(x / 2^f) or one more.
It is wrong only if x + 2^k + r wraps around 2^64, which happens with probability below
2^(k+1-64). With k = RANGE_BITS = 33 that is below 2^-30 per element. In real numbers: every
value that is truncated (a product, or a matrix product's sum of products) must stay below
VALUE_LIMIT = 2^(33 - 2*12) = 512 in absolute value. ``Encoding.encode`` refuses inputs outside
that range. Keeping the products inside it is the caller's part; inputs below sqrt(512) ~ 22.6
always do.

Comparison (``less_than_zero``) computes the sign bit of x. The dealer shares an r that is
uniform over the ring, plus shares of r's bits in Z_2. The parties open c = x + r, which is
uniform. Then

    MSB(x) = c_{l-1} XOR r_{l-1} XOR [c mod 2^(l-1) < r mod 2^(l-1)],

where the bitwise comparison of the public c with the shared bits of r is a prefix circuit of
AND gates: Beaver triples over Z_2, about log2(l) rounds (Damgård, Fitzi, Kiltz, Nielsen and
Toft, TCC 2006). A daBit turns the Z_2 result into a ring share; a daBit is a random bit shared
both in Z_2 and in the ring (Rotaru and Wood, INDOCRYPT 2019). Comparison is exact for
|x| < 2^63.

A protocol is written once, against ``Transport``: numbered endpoints that send and receive
numpy arrays in FIFO order. The parties are endpoints 0..n-1 and the dealer is endpoint n.
``run_in_threads`` runs a program with every endpoint as a thread of this process, exchanging
arrays through queues. ``run_in_processes`` starts one OS process per endpoint, connected by
pipes; the messages travel as .npy bytes, never as pickles.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import queue
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from numbers import Integral
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from om_teach.crypto.sharing import additive_share, uniform

RING_BITS = 64
"""Shares live in Z_{2^64}: numpy's uint64 arithmetic wraps around exactly so."""

FRACTION_BITS = 12
"""Fixed point: a real x is stored as round(x * 2^12), so the resolution is 2^-12 ~ 2.4e-4."""

FAILURE_BITS = 30
"""Truncation goes wrong with probability below 2^-30 per element inside the range."""

RANGE_BITS = RING_BITS - 1 - FAILURE_BITS
"""Every ring value that is truncated must be below 2^33 in absolute value."""

VALUE_LIMIT = 2.0 ** (RANGE_BITS - 2 * FRACTION_BITS)
"""The documented range in real numbers, 512: inputs, products and sums of products stay below."""

TIMEOUT = 60.0
"""Seconds an endpoint waits for a message before it gives up."""

_STOP, _TRIPLE, _MATRIX_TRIPLE, _TRUNCATION, _MASK_BITS, _DABIT = range(6)
_CLOSED = object()


@dataclass(frozen=True)
class Encoding:
    """The ring Z_{2^ring_bits}, the fixed-point scale 2^fraction_bits, and the range: ring
    values below 2^range_bits in absolute value truncate correctly, with probability at least
    1 - 2^(range_bits + 1 - ring_bits).

    The defaults are the documented 64-bit setting. Small rings (``Encoding(3, 0, 1)``, the
    ring Z_8 with integers only) let tests enumerate every random choice.
    """

    ring_bits: int = RING_BITS
    fraction_bits: int = FRACTION_BITS
    range_bits: int = RANGE_BITS

    def __post_init__(self) -> None:
        if not 2 <= self.ring_bits <= 64:
            raise ValueError(f"ring_bits must be between 2 and 64, got {self.ring_bits}")
        if self.fraction_bits < 0:
            raise ValueError(f"fraction_bits must not be negative, got {self.fraction_bits}")
        if not 2 * self.fraction_bits <= self.range_bits <= self.ring_bits - 2:
            raise ValueError(
                f"range_bits must lie between 2 * fraction_bits = {2 * self.fraction_bits} "
                f"and ring_bits - 2 = {self.ring_bits - 2}, got {self.range_bits}"
            )

    @property
    def modulus(self) -> int:
        return 2**self.ring_bits

    @property
    def mask(self) -> np.uint64:
        return np.uint64(self.modulus - 1)

    @property
    def limit(self) -> float:
        """Inputs, products and sums of products must stay below this in absolute value."""
        return 2.0 ** (self.range_bits - 2 * self.fraction_bits)

    @property
    def failure_probability(self) -> float:
        """Bound on the chance that one element's truncation fails inside the range."""
        return 2.0 ** (self.range_bits + 1 - self.ring_bits)

    def to_ring(self, integers: ArrayLike) -> np.ndarray:
        """Signed integers as ring elements (two's complement), uint64."""
        return np.asarray(integers, dtype=np.int64).view(np.uint64) & self.mask

    def to_signed(self, ring: np.ndarray) -> np.ndarray:
        """Ring elements as signed integers in [-2^(l-1), 2^(l-1)), int64."""
        shift = np.uint64(64 - self.ring_bits)
        return (np.asarray(ring, dtype=np.uint64) << shift).view(np.int64) >> np.int64(shift)

    def encode(self, values: ArrayLike) -> np.ndarray:
        """Real numbers as fixed-point ring elements; refuses values outside the range."""
        x = np.asarray(values, dtype=float)
        if not np.all(np.isfinite(x)):
            raise ValueError("cannot encode NaN or infinity")
        if x.size and np.abs(x).max() >= self.limit:
            raise ValueError(
                f"{np.abs(x).max()} is outside the documented range |x| < {self.limit}: "
                "truncation could fail there (see the module docstring)"
            )
        return self.to_ring(np.round(x * 2.0**self.fraction_bits).astype(np.int64))

    def decode(self, ring: np.ndarray, scale: int) -> np.ndarray:
        """Ring elements carrying ``scale`` fractional bits as real numbers."""
        return self.to_signed(ring) / 2.0**scale


DEFAULT_ENCODING = Encoding()
"""The documented setting: Z_{2^64}, 12 fractional bits, values below 512."""


class Transport(ABC):
    """Reliable, ordered delivery of numpy arrays between endpoints 0..endpoints-1: parties
    first, the dealer last. Each (sender, receiver) pair is its own FIFO channel.

    With ``record=True`` every array received is kept in ``received``: the endpoint's view.
    """

    def __init__(
        self, rank: int, endpoints: int, *, timeout: float = TIMEOUT, record: bool = False
    ) -> None:
        self.rank, self.endpoints, self.timeout = rank, endpoints, timeout
        self.inbox: dict[int, queue.Queue] = {
            peer: queue.Queue() for peer in range(endpoints) if peer != rank
        }
        self.received: list[np.ndarray] | None = [] if record else None

    @abstractmethod
    def send(self, to: int, message: np.ndarray) -> None:
        """Deliver ``message`` to endpoint ``to``; never waits for the receiver to read it."""

    def recv(self, frm: int) -> np.ndarray:
        """The next array from endpoint ``frm``, waiting up to ``timeout`` seconds."""
        try:
            message = self.inbox[frm].get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(
                f"endpoint {self.rank} waited {self.timeout} s for endpoint {frm}"
            ) from None
        if message is _CLOSED:
            raise ConnectionAbortedError(f"endpoint {frm} stopped before endpoint {self.rank}")
        if self.received is not None:
            self.received.append(message)
        return message


class _QueueTransport(Transport):
    def __init__(self, network: ThreadNetwork, rank: int, endpoints: int, **options: Any) -> None:
        super().__init__(rank, endpoints, **options)
        self.network = network

    def send(self, to: int, message: np.ndarray) -> None:
        self.network.transports[to].inbox[self.rank].put(np.array(message, copy=True))


def _dump(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def _load(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class PipeTransport(Transport):
    """Endpoints in separate processes, one duplex pipe per pair. A reader thread per pipe
    drains it into the inbox, so sending never deadlocks on a full pipe."""

    def __init__(
        self, rank: int, endpoints: int, connections: Mapping[int, Connection], **options: Any
    ) -> None:
        super().__init__(rank, endpoints, **options)
        self.connections = dict(connections)
        for peer, connection in self.connections.items():
            threading.Thread(
                target=self._drain, args=(connection, self.inbox[peer]), daemon=True
            ).start()

    @staticmethod
    def _drain(connection: Connection, inbox: queue.Queue) -> None:
        try:
            while True:
                inbox.put(_load(connection.recv_bytes()))
        except (EOFError, OSError):
            inbox.put(_CLOSED)

    def send(self, to: int, message: np.ndarray) -> None:
        self.connections[to].send_bytes(_dump(message))

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()


class SharedTensor:
    """One party's additive share of a tensor whose value is (sum of shares) / 2^scale.

    ``scale`` is the number of fractional bits: ``fraction_bits`` for real numbers, 0 for
    integers and bits. Operators run the protocols with the other parties, so every party
    must apply the same operations in the same order. A public operand is a number or an
    array: one of integer dtype is taken as integers, one of float dtype as fixed point.
    """

    __array_ufunc__ = None  # numpy defers to our reflected operators

    def __init__(self, party: Party, share: np.ndarray, scale: int) -> None:
        self.party = party
        self.share = np.asarray(share, dtype=np.uint64)
        self.scale = scale

    @property
    def shape(self) -> tuple[int, ...]:
        return self.share.shape

    def __repr__(self) -> str:
        return f"SharedTensor(shape={self.shape}, scale={self.scale}, party={self.party.rank})"

    def reveal(self) -> np.ndarray:
        """Open the value to every party: int64 for integers, float for fixed point."""
        ring = self.party._open(self.share, self.party.encoding.ring_bits)
        if self.scale == 0:
            return self.party.encoding.to_signed(ring)
        return self.party.encoding.decode(ring, self.scale)

    def _operand(self, other: SharedTensor | ArrayLike) -> tuple[np.ndarray, int, bool]:
        """(ring value or share, scale, shared?) for the other side of an operation."""
        if isinstance(other, SharedTensor):
            if other.party is not self.party:
                raise ValueError("cannot combine shares held by different parties")
            return other.share, other.scale, True
        value = np.asarray(other)
        if value.dtype.kind in "biu":
            return self.party.encoding.to_ring(value.astype(np.int64)), 0, False
        if value.dtype.kind == "f":
            return self.party.encoding.encode(value), self.party.encoding.fraction_bits, False
        raise TypeError(f"cannot compute with a {value.dtype} operand")

    def _lift(self, ring: np.ndarray, scale: int, to: int) -> np.ndarray:
        return ring * np.uint64(2 ** (to - scale)) & self.party.encoding.mask

    def __add__(self, other: SharedTensor | ArrayLike) -> SharedTensor:
        ring, scale, shared = self._operand(other)
        top = max(scale, self.scale)
        mine, theirs = self._lift(self.share, self.scale, top), self._lift(ring, scale, top)
        if not shared and self.party.rank != 0:
            theirs = np.zeros_like(theirs)
        return SharedTensor(self.party, (mine + theirs) & self.party.encoding.mask, top)

    __radd__ = __add__

    def __neg__(self) -> SharedTensor:
        return SharedTensor(self.party, (-self.share) & self.party.encoding.mask, self.scale)

    def __sub__(self, other: SharedTensor | ArrayLike) -> SharedTensor:
        if isinstance(other, SharedTensor):
            return self + -other
        value = np.asarray(other)
        return self + -value.astype(np.int64 if value.dtype.kind in "biu" else float)

    def __rsub__(self, other: ArrayLike) -> SharedTensor:
        return -self + other

    def __mul__(self, other: SharedTensor | ArrayLike) -> SharedTensor:
        ring, scale, shared = self._operand(other)
        if shared:
            product = self.party._multiply(self.share, ring, self.party.encoding.ring_bits)
        else:
            product = self.share * ring & self.party.encoding.mask
        return self.party._rescale(product, self.scale + scale)

    __rmul__ = __mul__

    def __matmul__(self, other: SharedTensor | ArrayLike) -> SharedTensor:
        ring, scale, shared = self._operand(other)
        if shared:
            product = self.party._matmul(self.share, ring)
        else:
            product = self.share @ ring & self.party.encoding.mask
        return self.party._rescale(product, self.scale + scale)

    def __rmatmul__(self, other: ArrayLike) -> SharedTensor:
        ring, scale, _ = self._operand(other)
        return self.party._rescale(ring @ self.share & self.party.encoding.mask, self.scale + scale)

    def __lt__(self, other: SharedTensor | ArrayLike) -> SharedTensor:
        return less_than_zero(self - other)

    def __gt__(self, other: SharedTensor | ArrayLike) -> SharedTensor:
        return less_than_zero(-self + other)

    def __getitem__(self, index: Any) -> SharedTensor:
        return SharedTensor(self.party, self.share[index], self.scale)

    def sum(self, axis: int | tuple[int, ...] | None = None) -> SharedTensor:
        """Sum over ``axis`` (all axes by default): local, no communication."""
        total = np.sum(self.share, axis=axis, dtype=np.uint64) & self.party.encoding.mask
        return SharedTensor(self.party, total, self.scale)


class Party:
    """A computing party: deals its inputs, holds its shares, and runs the protocols.

    ``rng`` draws the shares of this party's inputs (None: the operating system's secure
    generator). Party 0 also sends the dealer its requests; the other parties just receive.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        encoding: Encoding = DEFAULT_ENCODING,
        rng: np.random.Generator | None = None,
    ) -> None:
        if transport.endpoints < 3:
            raise ValueError("SMPC needs at least 2 parties besides the dealer")
        self.transport, self.encoding, self.rng = transport, encoding, rng
        self.rank = transport.rank
        self.parties = transport.endpoints - 1
        self.dealer = self.parties

    def _others(self) -> list[int]:
        return [p for p in range(self.parties) if p != self.rank]

    def share(self, value: ArrayLike | None, *, owner: int) -> SharedTensor:
        """Secret-share the owner's real-valued input (fixed point); the others pass None."""
        share = self._deal(value, owner, self.encoding.encode)
        return SharedTensor(self, share, self.encoding.fraction_bits)

    def share_integers(self, value: ArrayLike | None, *, owner: int) -> SharedTensor:
        """Secret-share the owner's integers (in [-2^(l-1), 2^l)); the others pass None."""
        return SharedTensor(self, self._deal(value, owner, np.asarray), 0)

    def _deal(
        self, value: ArrayLike | None, owner: int, encode: Callable[[ArrayLike], np.ndarray]
    ) -> np.ndarray:
        if not 0 <= owner < self.parties:
            raise ValueError(f"the owner must be a party 0..{self.parties - 1}, got {owner}")
        if self.rank != owner:
            if value is not None:
                raise ValueError(f"party {self.rank} passed a value, but party {owner} owns it")
            return self.transport.recv(owner)
        if value is None:
            raise ValueError(f"party {owner} owns this input and must pass its value")
        shares = additive_share(
            encode(value), self.parties, rng=self.rng, modulus=self.encoding.modulus
        )
        for p in self._others():
            self.transport.send(p, shares[p])
        return shares[owner]

    def _constant(self, ring: np.ndarray) -> np.ndarray:
        """This party's share of a public value: party 0 holds it, the others hold zero."""
        return ring if self.rank == 0 else np.zeros_like(ring)

    def _open(self, share: np.ndarray, bits: int) -> np.ndarray:
        """Send this share to every other party, and add up all of them modulo 2^bits."""
        for p in self._others():
            self.transport.send(p, share)
        total = share
        for p in self._others():
            total = total + self.transport.recv(p)
        return total & np.uint64(2**bits - 1)

    def _request(self, kind: int, *params: int, count: int) -> list[np.ndarray]:
        """Ask the dealer (party 0 speaks for all) and receive this party's ``count`` shares."""
        if self.rank == 0:
            self.transport.send(self.dealer, np.array([kind, *params], dtype=np.int64))
        return [self.transport.recv(self.dealer) for _ in range(count)]

    def _multiply(self, x: np.ndarray, y: np.ndarray, bits: int) -> np.ndarray:
        """Shares of x * y mod 2^bits (elementwise, broadcast) with a Beaver triple (a, b, ab):
        open d = x - a and e = y - b, then xy = ab + d b + e a + d e."""
        x, y = np.broadcast_arrays(x, y)
        mask = np.uint64(2**bits - 1)
        a, b, c = self._request(_TRIPLE, bits, *x.shape, count=3)
        d, e = self._open(np.stack([x - a, y - b]) & mask, bits)
        z = c + d * b + e * a
        return (z + d * e if self.rank == 0 else z) & mask

    def _matmul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Shares of x @ y with a matrix triple (A, B, AB), as in ``_multiply``."""
        a, b, c = self._request(_MATRIX_TRIPLE, x.ndim, *x.shape, y.ndim, *y.shape, count=3)
        d = self._open((x - a) & self.encoding.mask, self.encoding.ring_bits)
        e = self._open((y - b) & self.encoding.mask, self.encoding.ring_bits)
        z = c + d @ b + a @ e
        return (z + d @ e if self.rank == 0 else z) & self.encoding.mask

    def _truncate(self, x: np.ndarray, bits: int) -> np.ndarray:
        """Shares of x / 2^bits (floor, or one more): probabilistic truncation, see the module
        docstring. Correct with probability 1 - 2^(k+1-l) for |x| < 2^k, k = range_bits."""
        enc = self.encoding
        r, r_high = self._request(_TRUNCATION, bits, *x.shape, count=2)
        offset = enc.to_ring(2**enc.range_bits) if self.rank == 0 else np.uint64(0)
        c = self._open((x + offset + r) & enc.mask, enc.ring_bits)
        z = -r_high
        if self.rank == 0:
            z = z + (c >> np.uint64(bits)) - enc.to_ring(2 ** (enc.range_bits - bits))
        return z & enc.mask

    def _rescale(self, product: np.ndarray, scale: int) -> SharedTensor:
        """A product's shares, truncated back to ``fraction_bits`` if it carries more."""
        extra = scale - self.encoding.fraction_bits
        if extra <= 0:
            return SharedTensor(self, product, scale)
        return SharedTensor(self, self._truncate(product, extra), self.encoding.fraction_bits)

    def _sign_bit(self, x: np.ndarray) -> np.ndarray:
        """Shares in Z_2 of the most significant bit of x, that is of [x < 0]."""
        ell = self.encoding.ring_bits
        r, r_bits = self._request(_MASK_BITS, *x.shape, count=2)
        c = self._open((x + r) & self.encoding.mask, ell)
        positions = np.arange(ell, dtype=np.uint64).reshape((ell,) + (1,) * x.ndim)
        c_bits = (c >> positions) & np.uint64(1)
        public = np.uint64(1) if self.rank == 0 else np.uint64(0)
        # Bit i of the low parts: does r beat c here (g), and are they equal (e)?
        greater = r_bits[: ell - 1] & (np.uint64(1) ^ c_bits[: ell - 1])
        equal = r_bits[: ell - 1] ^ (public & (c_bits[: ell - 1] ^ np.uint64(1)))
        while len(greater) > 1:  # merge neighbours, high over low; e of index 0 is never read
            pairs = len(greater) // 2
            high_g, low_g = greater[1 : 2 * pairs : 2], greater[0 : 2 * pairs : 2]
            high_e, low_e = equal[1 : 2 * pairs : 2], equal[0 : 2 * pairs : 2]
            product = self._multiply(
                np.concatenate([high_e, high_e[1:]]), np.concatenate([low_g, low_e[1:]]), 1
            )
            merged_g = high_g ^ product[:pairs]
            merged_e = np.concatenate([np.zeros_like(merged_g[:1]), product[pairs:]])
            greater = np.concatenate([merged_g, greater[2 * pairs :]])
            equal = np.concatenate([merged_e, equal[2 * pairs :]])
        return r_bits[ell - 1] ^ greater[0] ^ (public & c_bits[ell - 1])

    def _bit_to_ring(self, bit: np.ndarray) -> np.ndarray:
        """Z_2 shares of a bit as ring shares, with a daBit s: open t = bit XOR s, then
        bit = t + s - 2 t s, which is linear in s because t is public."""
        s_binary, s_ring = self._request(_DABIT, *bit.shape, count=2)
        t = self._open(bit ^ s_binary, 1)
        flipped = np.where(t == 1, -s_ring, s_ring)
        return (flipped + self._constant(t)) & self.encoding.mask

    def close(self) -> None:
        """Tell the dealer that the computation is over (party 0 speaks for all)."""
        if self.rank == 0:
            self.transport.send(self.dealer, np.array([_STOP], dtype=np.int64))


class Dealer:
    """The trusted dealer: answers party 0's requests with fresh correlated randomness and
    sends each party only its own shares. It sees kinds and shapes, never data."""

    def __init__(
        self,
        transport: Transport,
        *,
        encoding: Encoding = DEFAULT_ENCODING,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.transport, self.encoding, self.rng = transport, encoding, rng
        self.parties = transport.endpoints - 1

    def _uniform(self, shape: Sequence[int], bits: int) -> np.ndarray:
        return uniform(tuple(shape), modulus=2**bits, rng=self.rng)

    def _deal(self, *values: tuple[np.ndarray, int]) -> None:
        """Share each (value, bits) over Z_{2^bits}; party p gets its shares in this order."""
        for value, bits in values:
            shares = additive_share(value, self.parties, rng=self.rng, modulus=2**bits)
            for p in range(self.parties):
                self.transport.send(p, shares[p])

    def _next_request(self) -> np.ndarray:
        """Party 0's next request, however long it computes in between; a party that fails
        ends the wait (the transport reports it closed)."""
        while True:
            try:
                return self.transport.recv(0)
            except TimeoutError:
                continue

    def serve(self) -> None:
        """Answer requests until party 0 says stop."""
        ell, mask = self.encoding.ring_bits, self.encoding.mask
        while True:
            kind, *params = (int(v) for v in self._next_request())
            if kind == _STOP:
                return
            if kind == _TRIPLE:
                bits, shape = params[0], params[1:]
                a, b = self._uniform(shape, bits), self._uniform(shape, bits)
                self._deal((a, bits), (b, bits), (a * b & np.uint64(2**bits - 1), bits))
            elif kind == _MATRIX_TRIPLE:
                split = 1 + params[0]
                a, b = self._uniform(params[1:split], ell), self._uniform(params[split + 1 :], ell)
                self._deal((a, ell), (b, ell), (a @ b & mask, ell))
            elif kind == _TRUNCATION:
                r = self._uniform(params[1:], ell)
                self._deal((r, ell), (r >> np.uint64(params[0]), ell))
            elif kind == _MASK_BITS:
                r = self._uniform(params, ell)
                positions = np.arange(ell, dtype=np.uint64).reshape((ell,) + (1,) * len(params))
                self._deal((r, ell), ((r >> positions) & np.uint64(1), 1))
            elif kind == _DABIT:
                s = self._uniform(params, 1)
                self._deal((s, 1), (s, ell))
            else:
                raise ValueError(f"the dealer got an unknown request kind {kind}")


def truncate(x: SharedTensor, bits: int) -> SharedTensor:
    """x / 2^bits by probabilistic truncation (the scale is kept): floor or one more in the
    last place, wrong with probability below ``encoding.failure_probability`` per element
    while |x| in ring units stays below 2^range_bits."""
    range_bits = x.party.encoding.range_bits
    if not 0 <= bits <= range_bits:
        raise ValueError(f"bits must be between 0 and range_bits={range_bits}, got {bits}")
    return SharedTensor(x.party, x.party._truncate(x.share, bits), x.scale)


def less_than_zero(x: SharedTensor) -> SharedTensor:
    """Shares of the bit [x < 0] (integers, scale 0), by the perfectly hiding comparison of
    the module docstring. Exact for every |x| below half the ring."""
    party = x.party
    return SharedTensor(party, party._bit_to_ring(party._sign_bit(x.share)), 0)


def relu(x: SharedTensor) -> SharedTensor:
    """max(x, 0), as x times the shared bit [x >= 0]: exact, no truncation."""
    return x * (1 - less_than_zero(x))


def argmax(x: SharedTensor) -> SharedTensor:
    """One-hot shares (scale 0) of the largest entry along the last axis, the first on ties.

    A knock-out tournament: each round compares neighbours (left < right?) and keeps the
    winner's value and one-hot vector with one multiplication by the shared comparison bit.
    """
    if not x.shape or x.shape[-1] == 0:
        raise ValueError(f"argmax needs a last axis with at least one entry, got shape {x.shape}")
    party, enc = x.party, x.party.encoding
    classes = x.shape[-1]
    values = x.share
    onehots = np.broadcast_to(
        party._constant(np.eye(classes, dtype=np.uint64)), (*x.shape, classes)
    )
    while values.shape[-1] > 1:
        pairs = values.shape[-1] // 2
        left, right = values[..., 0 : 2 * pairs : 2], values[..., 1 : 2 * pairs : 2]
        left_hot, right_hot = onehots[..., 0 : 2 * pairs : 2, :], onehots[..., 1 : 2 * pairs : 2, :]
        right_wins = party._bit_to_ring(party._sign_bit((left - right) & enc.mask))
        gaps = np.concatenate([(right - left)[..., None], right_hot - left_hot], axis=-1)
        moves = party._multiply(right_wins[..., None], gaps & enc.mask, enc.ring_bits)
        values = (
            np.concatenate([left + moves[..., 0], values[..., 2 * pairs :]], axis=-1) & enc.mask
        )
        onehots = np.concatenate([left_hot + moves[..., 1:], onehots[..., 2 * pairs :, :]], axis=-2)
        onehots = onehots & enc.mask
    return SharedTensor(party, onehots[..., 0, :], 0)


def accuracy(scores: SharedTensor, labels: SharedTensor) -> float:
    """The fraction of rows whose highest score is at the labelled class. ``labels`` are
    one-hot integer shares; only the number of correct rows is revealed."""
    if scores.shape != labels.shape or len(scores.shape) != 2:
        raise ValueError(f"scores {scores.shape} and one-hot labels {labels.shape} must be n x k")
    correct = (argmax(scores) * labels).sum().reveal()
    return int(correct) / scores.shape[0]


def linear_classifier_accuracy(party: Party, private: Mapping[str, np.ndarray] | None) -> float:
    """A program for the runners: the accuracy of a linear classifier, and nothing else.

    Party 0 holds the model ({"weights": d x k, "bias": k}); party 1 holds labelled rows
    ({"features": n x d, "labels": n class indices}); any further parties pass None and help
    compute. Every party returns the same accuracy.
    """
    model = (private or {}) if party.rank == 0 else {}
    data = (private or {}) if party.rank == 1 else {}
    weights = party.share(model.get("weights"), owner=0)
    bias = party.share(model.get("bias"), owner=0)
    features = party.share(data.get("features"), owner=1)
    classes = bias.shape[-1]
    onehot = None if party.rank != 1 else np.eye(classes, dtype=np.int64)[data["labels"]]
    labels = party.share_integers(onehot, owner=1)
    return accuracy(features @ weights + bias, labels)


Program = Callable[[Party, Any], Any]


def _endpoint_rngs(rng: int | Sequence[Any] | None, endpoints: int) -> list[Any]:
    """One generator per endpoint: none (OS randomness), derived from a seed, or as given."""
    if rng is None:
        return [None] * endpoints
    if isinstance(rng, Integral):
        return [np.random.default_rng([int(rng), rank]) for rank in range(endpoints)]
    rngs = list(rng)
    if len(rngs) != endpoints:
        raise ValueError(
            f"give one generator per endpoint ({endpoints}: the parties, then the dealer), "
            f"got {len(rngs)}"
        )
    return rngs


def _serve(
    transport: Transport, program: Program, private: Any, encoding: Encoding, rng: Any
) -> np.ndarray:
    """Run one endpoint: the dealer serves requests, a party runs the program. Ring
    arithmetic wraps around by design, so numpy's overflow warnings are off."""
    with np.errstate(over="ignore"):
        if transport.rank == transport.endpoints - 1:
            Dealer(transport, encoding=encoding, rng=rng).serve()
            return np.zeros(0)
        party = Party(transport, encoding=encoding, rng=rng)
        result = np.asarray(program(party, private))
        party.close()
        return result


class ThreadNetwork:
    """Parties and dealer as threads of this process, exchanging arrays through queues.

    The endpoints named in ``record`` keep their views (every array they receive) in
    ``transports[rank].received``. A network serves one run.
    """

    def __init__(
        self, parties: int, *, timeout: float = TIMEOUT, record: Collection[int] = ()
    ) -> None:
        if parties < 2:
            raise ValueError(f"SMPC needs at least 2 parties, got {parties}")
        self.transports = [
            _QueueTransport(self, rank, parties + 1, timeout=timeout, record=rank in record)
            for rank in range(parties + 1)
        ]

    def _abort(self) -> None:
        for transport in self.transports:
            for inbox in transport.inbox.values():
                inbox.put(_CLOSED)

    def run(
        self,
        program: Program,
        inputs: Sequence[Any],
        *,
        encoding: Encoding = DEFAULT_ENCODING,
        rng: int | Sequence[Any] | None = None,
    ) -> list[np.ndarray]:
        """``program(party, inputs[rank])`` on every party at once; each party's result."""
        endpoints = len(self.transports)
        if len(inputs) != endpoints - 1:
            raise ValueError(f"give one input per party ({endpoints - 1}), got {len(inputs)}")
        rngs = _endpoint_rngs(rng, endpoints)
        results: list[Any] = [None] * endpoints
        errors: list[BaseException] = []

        def target(rank: int) -> None:
            private = inputs[rank] if rank < endpoints - 1 else None
            try:
                results[rank] = _serve(
                    self.transports[rank], program, private, encoding, rngs[rank]
                )
            except BaseException as error:
                errors.append(error)
                self._abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(endpoints)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:  # the first failure, not the aborts it caused elsewhere
            raise min(errors, key=lambda e: isinstance(e, ConnectionAbortedError))
        return results[:-1]


def run_in_threads(
    program: Program,
    inputs: Sequence[Any],
    *,
    encoding: Encoding = DEFAULT_ENCODING,
    rng: int | Sequence[Any] | None = None,
) -> list[np.ndarray]:
    """Run ``program(party, inputs[rank])`` on ``len(inputs)`` parties as threads.

    ``rng``: None draws every share from the operating system's secure generator; an int
    seeds each endpoint's own generator (reproducible lessons); a sequence gives one
    generator per endpoint, the dealer last. Returns each party's result as an array.
    """
    return ThreadNetwork(len(inputs)).run(program, inputs, encoding=encoding, rng=rng)


def _process_main(
    rank: int,
    endpoints: int,
    connections: dict[int, Connection],
    result: Connection,
    program: Program,
    private: Any,
    encoding: Encoding,
    rng: Any,
    timeout: float,
) -> None:
    transport = PipeTransport(rank, endpoints, connections, timeout=timeout)
    try:
        result.send_bytes(b"R" + _dump(_serve(transport, program, private, encoding, rng)))
    except BaseException:
        result.send_bytes(b"E" + traceback.format_exc().encode())
    finally:
        transport.close()
        result.close()


def run_in_processes(
    program: Program,
    inputs: Sequence[Any],
    *,
    encoding: Encoding = DEFAULT_ENCODING,
    rng: int | Sequence[Any] | None = None,
    timeout: float = TIMEOUT,
) -> list[np.ndarray]:
    """Run ``program`` as in :func:`run_in_threads`, but each party and the dealer in its own
    OS process (spawned), connected by pipes. ``program`` must be importable (a module-level
    function) and return an array; a failing endpoint raises RuntimeError with its traceback.
    """
    endpoints = len(inputs) + 1
    if len(inputs) < 2:
        raise ValueError(f"SMPC needs at least 2 parties, got {len(inputs)}")
    rngs = _endpoint_rngs(rng, endpoints)
    context = mp.get_context("spawn")
    links: list[dict[int, Connection]] = [{} for _ in range(endpoints)]
    for i in range(endpoints):
        for j in range(i + 1, endpoints):
            links[i][j], links[j][i] = context.Pipe()
    results = [context.Pipe(duplex=False) for _ in range(endpoints)]
    processes = [
        context.Process(
            target=_process_main,
            args=(
                rank,
                endpoints,
                links[rank],
                results[rank][1],
                program,
                inputs[rank] if rank < endpoints - 1 else None,
                encoding,
                rngs[rank],
                timeout,
            ),
            daemon=True,
            name=f"smpc-{'dealer' if rank == endpoints - 1 else f'party-{rank}'}",
        )
        for rank in range(endpoints)
    ]
    for process in processes:
        process.start()
    for end in [c for link in links for c in link.values()] + [w for _, w in results]:
        end.close()  # the children hold their own copies
    try:
        replies = []
        deadline = time.monotonic() + timeout
        for rank, (reader, _) in enumerate(results):
            if not reader.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"endpoint {rank} gave no result within {timeout} s")
            try:
                replies.append(reader.recv_bytes())
            except EOFError:
                replies.append(b"E" + f"endpoint {rank} exited without a result".encode())
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
    failures = [(rank, r[1:].decode()) for rank, r in enumerate(replies) if r[:1] == b"E"]
    if failures:
        rank, report = min(failures, key=lambda f: "ConnectionAbortedError" in f[1])
        raise RuntimeError(f"endpoint {rank} failed:\n{report}")
    return [_load(r[1:]) for r in replies[:-1]]
