"""Paillier encryption of vectors: many fixed-point numbers packed into each ciphertext.

Paillier's cryptosystem (P. Paillier, "Public-key cryptosystems based on composite degree
residuosity classes", EUROCRYPT 1999, LNCS 1592) is additively homomorphic. Multiplying two
ciphertexts mod n² adds their plaintexts mod n, and raising a ciphertext to the power k
multiplies its plaintext by k. That is all federated averaging needs: owners encrypt their
updates under one public key, anyone can add them up, and only the private key reads the total.

phe does the cryptography: key generation, encryption, CRT decryption, and gmpy2 arithmetic.
This module adds what vectors need.

* Fixed point. A float x is stored as the integer ``round(x / step)``, rounding half to even,
  with ``step = precision / max_summands``. Each value is then off by at most step / 2, so a
  sum of up to ``max_summands`` encryptions decrypts to within ``precision`` of the true sum.
* Packing. A plaintext of n's size has room for many such integers side by side. Slot i holds
  a value in bits ``[i*b, (i+1)*b)``, so one encryption carries dozens of values and one
  ciphertext multiplication adds them all.
* Headroom and sign. Let M be the largest ``|round(x / step)|``. A slot stores
  ``round(x / step) + M``, a number in ``[0, 2M]``, so it is never negative. A sum of k
  encryptions then lies in ``[0, 2Mk]``. The slot width b is chosen so that
  ``2M * max_summands < 2**b``, and no slot can carry into its neighbour. Each vector counts
  the encryptions it sums (k), and any operation that would take k past ``max_summands`` is
  refused. Decryption subtracts the offset ``M * k`` exactly.
* Obfuscation ahead of time. An encryption costs one modular exponentiation, the factor
  ``r**n mod n²`` for a fresh random r; the rest is a multiplication. :class:`ObfuscatorPool`
  computes these factors in advance (before a round, in idle time) and hands each out once.

Threat model. There are three parties, all honest but curious:

* Data owners encrypt their vectors under the key holder's public key.
* The aggregator holds the public key and the ciphertexts, and adds the ciphertexts up.
* The key holder holds the private key and decrypts only the aggregate.

Paillier is semantically secure under the decisional composite residuosity assumption, so
the aggregator learns nothing about any plaintext, provided every ciphertext carries a fresh
factor. Each factor must be used once. If two ciphertexts share an r, then ``c1 / c2`` equals
``(1 + n)**(m1 - m2)``, and that reveals the difference of their plaintexts.

The key holder learns what it decrypts: the sum. It can decrypt any ciphertext it sees, so
individual ciphertexts must never reach it. If they are published (on a shared store, say),
Paillier alone no longer hides one owner's vector from the key holder: pair it with secure
aggregation or a threshold key.

Owners are trusted to encrypt in-range values, and the aggregator to add correctly: Paillier
gives no integrity, and a hand-made ciphertext can hold anything. Decryption refuses a slot
outside the range that a valid sum can reach, and non-zero padding. That catches overflow and
crude tampering, but it proves nothing about honest behaviour (there are no range proofs).

Caveats:

* Public: the key, the layout (precision, max_abs, max_summands), the vector length, the
  number of ciphertexts, and the count of summed encryptions. All of these travel in the clear.
* Like phe's ``EncryptedNumber.__add__``, sums and scalar multiples are not re-randomised.
  A sum of fresh ciphertexts is itself freshly obfuscated, because a product of independent
  random factors is random. But anyone who knows k can link ``c**k`` to c.
  :meth:`EncryptedVector.rerandomized` multiplies in fresh factors.
* This code has not been audited, and phe has not been audited either.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gmpy2
import numpy as np
from phe import PaillierPrivateKey, PaillierPublicKey, generate_paillier_keypair
from phe.util import mulmod, powmod

DEFAULT_KEY_BITS = 2048
MIN_KEY_BITS = 512
MAX_QUANTUM = 2**50
"""Largest offset M. It keeps float rounding in ``x / step`` well below one step."""
FORMAT = "om-teach/paillier-packed-vector/1"
LAYOUT_FIELDS = ("precision", "max_abs", "max_summands", "offset", "slot_bits", "slots")


def generate_keypair(
    n_length: int = DEFAULT_KEY_BITS,
) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A fresh phe key pair whose modulus n has ``n_length`` bits (2048 by default)."""
    _check_int("n_length", n_length, minimum=MIN_KEY_BITS)
    if n_length % 2:
        raise ValueError(
            f"n_length must be even (n is a product of two equal-size primes), got {n_length}"
        )
    return generate_paillier_keypair(n_length=n_length)


@dataclass(frozen=True)
class PackingLayout:
    """How values are encoded and where they sit in a plaintext of ``key_bits`` bits.

    Only ``key_bits``, ``precision``, ``max_abs`` and ``max_summands`` are chosen. ``step``,
    ``offset`` (M), ``slot_bits`` (b) and ``slots`` (values to a ciphertext) follow from them.
    """

    key_bits: int
    precision: float
    max_abs: float
    max_summands: int
    step: float = field(init=False)
    offset: int = field(init=False)
    slot_bits: int = field(init=False)
    slots: int = field(init=False)

    def __post_init__(self) -> None:
        _check_int("key_bits", self.key_bits, minimum=2)
        _check_int("max_summands", self.max_summands, minimum=1)
        precision = _check_positive("precision", self.precision)
        max_abs = _check_positive("max_abs", self.max_abs)
        step = precision / self.max_summands
        if not step > 0:
            raise ValueError(f"precision / max_summands underflows to zero ({precision!r})")
        quanta = max_abs / step
        if not quanta <= MAX_QUANTUM:
            raise ValueError(
                f"max_abs / (precision / max_summands) = {quanta:.3g} exceeds 2**50: floats "
                "cannot encode that finely; use a coarser precision or a smaller max_abs"
            )
        offset = math.ceil(quanta)
        slot_bits = (2 * offset * self.max_summands).bit_length()
        slots = (self.key_bits - 1) // slot_bits
        if slots < 1:
            raise ValueError(
                f"a slot needs {slot_bits} bits and a {self.key_bits}-bit key holds none: use a "
                "larger key, a coarser precision, a smaller max_abs or fewer summands"
            )
        for name, value in [
            ("precision", precision),
            ("max_abs", max_abs),
            ("step", step),
            ("offset", offset),
            ("slot_bits", slot_bits),
            ("slots", slots),
        ]:
            object.__setattr__(self, name, value)

    def ciphertexts_for(self, length: int) -> int:
        """How many ciphertexts a vector of ``length`` values takes."""
        return -(-length // self.slots)

    def encode(self, values: np.ndarray) -> list[int]:
        """Each value as ``round(x / step) + offset``, an int in ``[0, 2 * offset]``."""
        x = _as_vector(values)
        bad = ~np.isfinite(x) | (np.abs(x) > self.max_abs)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"value {x[i]!r} at index {i} is outside the encodable range "
                f"[-{self.max_abs!r}, {self.max_abs!r}] declared by max_abs"
            )
        return (np.rint(x / self.step).astype(np.int64) + self.offset).tolist()

    def pack(self, slots: Sequence[int]) -> list[int]:
        """Slot values into plaintexts, ``self.slots`` to each, the first in the lowest bits."""
        plaintexts = []
        for start in range(0, len(slots), self.slots):
            plaintext = 0
            for value in reversed(slots[start : start + self.slots]):
                plaintext = (plaintext << self.slot_bits) | value
            plaintexts.append(plaintext)
        return plaintexts

    def unpack(self, plaintexts: Sequence[int], length: int, count: int) -> list[int]:
        """The ``length`` slot values of decrypted plaintexts that sum ``count`` encryptions.

        Raises ValueError when a slot exceeds what ``count`` in-range encryptions can reach,
        or when the padding past the last value is not zero. Both mean an overflow or a
        tampered ciphertext, so no wrong number is returned.
        """
        limit, mask = 2 * self.offset * count, (1 << self.slot_bits) - 1
        values = []
        for j, plaintext in enumerate(plaintexts):
            rest = plaintext
            for i in range(self.slots):
                value, rest = rest & mask, rest >> self.slot_bits
                index = j * self.slots + i
                if index < length and value > limit:
                    raise ValueError(
                        f"slot overflow at index {index}: {value} exceeds {limit}, the most "
                        f"that {count} in-range encryption(s) can sum to; a party encrypted an "
                        "out-of-range value or the ciphertext was altered"
                    )
                if index >= length and value:
                    raise ValueError(f"ciphertext {j} has non-zero padding: it was altered")
                if index < length:
                    values.append(value)
            if rest:
                raise ValueError(f"ciphertext {j} decrypts past its slots: overflow or tampering")
        return values

    def decode(self, slots: Sequence[int], count: int) -> np.ndarray:
        """Slot values that sum ``count`` encryptions, back to floats (offset removed)."""
        bias = self.offset * count
        return np.array([float(value - bias) for value in slots]) * self.step

    def to_dict(self) -> dict[str, Any]:
        """The layout's fields, JSON-safe; the key size travels with n."""
        return {name: getattr(self, name) for name in LAYOUT_FIELDS}


class ObfuscatorPool:
    """Obfuscation factors ``r**n mod n²`` computed ahead of need, each handed out once.

    Computing a factor is nearly all the cost of an encryption. A pool filled in advance makes
    encryption a multiplication. When the pool runs dry, :meth:`take` computes fresh factors
    on demand: it never hands out a factor twice.
    """

    def __init__(self, public_key: PaillierPublicKey, size: int = 0) -> None:
        _check_public_key(public_key)
        self.public_key = public_key
        self._factors: list[int] = []
        self._lock = threading.Lock()
        self.precompute(size)

    def __len__(self) -> int:
        return len(self._factors)

    def precompute(self, k: int) -> None:
        """Compute ``k`` more factors and keep them for later encryptions."""
        _check_int("k", k, minimum=0)
        fresh = [self._fresh() for _ in range(k)]
        with self._lock:
            self._factors.extend(fresh)

    def take(self, k: int) -> list[int]:
        """Remove and return ``k`` factors, computing any the pool lacks."""
        _check_int("k", k, minimum=0)
        with self._lock:
            cut = max(len(self._factors) - k, 0)
            taken = self._factors[cut:]
            del self._factors[cut:]
        return taken + [self._fresh() for _ in range(k - len(taken))]

    def _fresh(self) -> int:
        key = self.public_key
        return powmod(key.get_random_lt_n(), key.n, key.nsquare)


class EncryptedVector:
    """A vector of floats under one Paillier key, packed many values to a ciphertext.

    Build one with :meth:`encrypt`, add vectors with ``+``, with the builtin ``sum``, or
    faster with :meth:`EncryptedVector.sum`. Multiply by a positive int with ``*``. Read the
    result back with :meth:`decrypt`. ``count`` is the number of encryptions summed so far;
    ``v * k`` counts as k copies of v.
    """

    __array_ufunc__ = None  # numpy defers to us, so `array + vector` raises our TypeError

    def __init__(
        self,
        public_key: PaillierPublicKey,
        ciphertexts: Sequence[int],
        *,
        length: int,
        layout: PackingLayout,
        count: int,
    ) -> None:
        _check_public_key(public_key)
        if not isinstance(layout, PackingLayout):
            raise TypeError(f"layout must be a PackingLayout, not {type(layout).__name__}")
        if layout.key_bits != public_key.n.bit_length():
            raise ValueError(
                f"the layout is for a {layout.key_bits}-bit key, "
                f"but n has {public_key.n.bit_length()} bits"
            )
        _check_int("length", length, minimum=1)
        _check_int("count", count, minimum=1)
        if count > layout.max_summands:
            raise ValueError(f"count {count} exceeds max_summands {layout.max_summands}")
        if len(ciphertexts) != layout.ciphertexts_for(length):
            raise ValueError(
                f"{length} values take {layout.ciphertexts_for(length)} ciphertexts "
                f"at {layout.slots} slots each, got {len(ciphertexts)}"
            )
        for j, c in enumerate(ciphertexts):
            if isinstance(c, bool) or not isinstance(c, int):
                raise TypeError(f"ciphertext {j} must be an int, not {type(c).__name__}")
            if not 0 < c < public_key.nsquare:
                raise ValueError(f"ciphertext {j} is not in the range (0, n²) of this key")
        self.public_key = public_key
        self.ciphertexts = tuple(ciphertexts)
        self.length = length
        self.layout = layout
        self.count = count

    @classmethod
    def encrypt(
        cls,
        public_key: PaillierPublicKey,
        values: Sequence[float] | np.ndarray,
        *,
        precision: float = 1e-6,
        max_abs: float,
        max_summands: int,
        pool: ObfuscatorPool | None = None,
    ) -> EncryptedVector:
        """Encrypt a 1-D vector whose values lie in ``[-max_abs, max_abs]``.

        The result can be summed with up to ``max_summands - 1`` other encryptions of the
        same layout, and the sum decrypts to within ``precision``. The obfuscation factors
        come from ``pool`` when one is given; otherwise they are computed here.
        """
        _check_public_key(public_key)
        layout = PackingLayout(public_key.n.bit_length(), precision, max_abs, max_summands)
        slots = layout.encode(values)
        plaintexts = layout.pack(slots)
        if pool is None:
            pool = ObfuscatorPool(public_key)
        elif pool.public_key != public_key:
            raise ValueError("the obfuscator pool belongs to a different public key")
        factors = pool.take(len(plaintexts))
        # phe's raw encryption with r = 1 is the bare g**m; the pooled r**n obfuscates it.
        ciphertexts = [
            mulmod(public_key.raw_encrypt(m, r_value=1), r, public_key.nsquare)
            for m, r in zip(plaintexts, factors, strict=True)
        ]
        return cls(public_key, ciphertexts, length=len(slots), layout=layout, count=1)

    @classmethod
    def sum(cls, vectors: Iterable[EncryptedVector]) -> EncryptedVector:
        """The homomorphic sum of ``vectors``: per ciphertext, one product mod n² in gmpy2."""
        vectors = list(vectors)
        if not vectors:
            raise ValueError("the sum of no vectors is undefined: pass at least one")
        first = vectors[0]
        for i, vector in enumerate(vectors):
            first._check_compatible(vector, f"vector {i}")
        count = sum(vector.count for vector in vectors)
        first._check_count(count, f"summing {len(vectors)} vectors")
        nsquare = gmpy2.mpz(first.public_key.nsquare)
        products = [gmpy2.mpz(c) for c in first.ciphertexts]
        for vector in vectors[1:]:
            for j, c in enumerate(vector.ciphertexts):
                products[j] = products[j] * c % nsquare
        return first._with([int(p) for p in products], count)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (
            f"<EncryptedVector length={self.length} count={self.count}/"
            f"{self.layout.max_summands} ciphertexts={len(self.ciphertexts)} {self.public_key!r}>"
        )

    def __add__(self, other: EncryptedVector) -> EncryptedVector:
        return EncryptedVector.sum([self, other])

    def __radd__(self, other: int) -> EncryptedVector:
        """``0 + vector`` is the vector, so the builtin ``sum`` works."""
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return EncryptedVector.sum([self, other])

    def __mul__(self, k: int) -> EncryptedVector:
        """Every value times the positive int ``k``: each ciphertext to the power k."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise TypeError(
                f"an EncryptedVector can be multiplied only by a positive int, not "
                f"{type(k).__name__}; scale by a float after decrypting"
            )
        k = int(k)
        if k < 1:
            raise ValueError(
                f"the scalar must be a positive int, got {k}: slots hold offset non-negative "
                "values, so negate after decrypting"
            )
        count = self.count * k
        self._check_count(count, f"multiplying by {k}")
        nsquare = self.public_key.nsquare
        return self._with([powmod(c, k, nsquare) for c in self.ciphertexts], count)

    __rmul__ = __mul__

    def rerandomized(self, pool: ObfuscatorPool | None = None) -> EncryptedVector:
        """The same plaintexts with fresh obfuscation, unlinkable to this vector's ciphertexts."""
        if pool is None:
            pool = ObfuscatorPool(self.public_key)
        elif pool.public_key != self.public_key:
            raise ValueError("the obfuscator pool belongs to a different public key")
        factors = pool.take(len(self.ciphertexts))
        nsquare = self.public_key.nsquare
        return self._with(
            [mulmod(c, r, nsquare) for c, r in zip(self.ciphertexts, factors, strict=True)],
            self.count,
        )

    def decrypt(self, private_key: PaillierPrivateKey) -> np.ndarray:
        """The plaintext vector (a sum, when ``count > 1``) as float64, within ``precision``."""
        if not isinstance(private_key, PaillierPrivateKey):
            raise TypeError(
                f"decrypting needs a phe PaillierPrivateKey, not {type(private_key).__name__}"
            )
        if private_key.public_key.n != self.public_key.n:
            raise ValueError("this vector was encrypted under a different public key")
        plaintexts = [private_key.raw_decrypt(c) for c in self.ciphertexts]
        slots = self.layout.unpack(plaintexts, self.length, self.count)
        return self.layout.decode(slots, self.count)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: big integers as decimal strings, and no private material."""
        return {
            "format": FORMAT,
            "n": str(self.public_key.n),
            "length": self.length,
            "count": self.count,
            "layout": self.layout.to_dict(),
            "ciphertexts": [str(c) for c in self.ciphertexts],
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], public_key: PaillierPublicKey | None = None
    ) -> EncryptedVector:
        """Rebuild a vector from :meth:`to_dict`'s form, validating every field.

        When ``public_key`` is given, the vector must be under that key, and it is attached
        to it.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"a serialized vector is a dict, not {type(data).__name__}")
        _require_fields(
            "serialized vector", data, ("format", "n", "length", "count", "layout", "ciphertexts")
        )
        if data["format"] != FORMAT:
            raise ValueError(f"unknown format {data['format']!r}, expected {FORMAT!r}")
        n = _decimal("n", data["n"])
        if n.bit_length() < MIN_KEY_BITS or n % 2 == 0:
            raise ValueError(f"n must be an odd modulus of at least {MIN_KEY_BITS} bits")
        if public_key is None:
            public_key = PaillierPublicKey(n)
        elif public_key.n != n:
            raise ValueError("the serialized vector is under a different public key")
        raw = data["layout"]
        if not isinstance(raw, Mapping):
            raise TypeError(f"field 'layout' must be a dict, not {type(raw).__name__}")
        _require_fields("layout", raw, LAYOUT_FIELDS)
        layout = PackingLayout(
            n.bit_length(), raw["precision"], raw["max_abs"], raw["max_summands"]
        )
        for name in ("offset", "slot_bits", "slots"):
            _check_int(f"layout field {name!r}", raw[name], minimum=1)
            if raw[name] != getattr(layout, name):
                raise ValueError(
                    f"layout field {name!r} is {raw[name]} but precision, max_abs and "
                    f"max_summands give {getattr(layout, name)} for a {n.bit_length()}-bit key"
                )
        ciphertexts = data["ciphertexts"]
        if not isinstance(ciphertexts, list):
            raise TypeError(f"field 'ciphertexts' must be a list, not {type(ciphertexts).__name__}")
        return cls(
            public_key,
            [_decimal(f"ciphertext {j}", c) for j, c in enumerate(ciphertexts)],
            length=data["length"],
            layout=layout,
            count=data["count"],
        )

    def _with(self, ciphertexts: list[int], count: int) -> EncryptedVector:
        return EncryptedVector(
            self.public_key, ciphertexts, length=self.length, layout=self.layout, count=count
        )

    def _check_compatible(self, other: object, name: str) -> None:
        if not isinstance(other, EncryptedVector):
            raise TypeError(
                f"{name} is a {type(other).__name__}: only EncryptedVectors add to an "
                "EncryptedVector; encrypt plaintext values first"
            )
        if other.public_key.n != self.public_key.n:
            raise ValueError(f"{name} was encrypted under a different public key")
        if other.length != self.length:
            raise ValueError(
                f"length mismatch: {name} has {other.length} values, not {self.length}"
            )
        if other.layout != self.layout:
            raise ValueError(
                f"{name} was packed with a different layout: {other.layout} vs {self.layout}"
            )

    def _check_count(self, count: int, what: str) -> None:
        if count > self.layout.max_summands:
            raise ValueError(
                f"{what} would sum {count} encryptions, past max_summands "
                f"{self.layout.max_summands}: the slots could overflow"
            )


def _as_vector(values: Sequence[float] | np.ndarray) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise TypeError(f"values must be real numbers: {error}") from error
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}: flatten with numpy.ravel")
    if x.size == 0:
        raise ValueError("values is empty: there is nothing to encrypt")
    return x


def _check_public_key(public_key: object) -> None:
    if not isinstance(public_key, PaillierPublicKey):
        raise TypeError(
            f"public_key must be a phe PaillierPublicKey, not {type(public_key).__name__}"
        )


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


def _require_fields(what: str, data: Mapping[str, Any], names: Iterable[str]) -> None:
    missing = [name for name in names if name not in data]
    if missing:
        raise ValueError(f"{what} is missing field(s) {missing}")


def _decimal(name: str, value: object) -> int:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a decimal string, not {type(value).__name__}")
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"{name} is not a decimal string of digits: {value[:20]!r}")
    return int(value)
