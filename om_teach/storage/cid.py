"""Content identifiers: the CIDv0 that Kubo's default ``ipfs add`` gives a file.

A file is cut into 256 KiB chunks; each chunk becomes a dag-pb node holding a UnixFS ``File``
message, and the chunks are joined under a balanced tree of dag-pb nodes with at most 174 links
each (Benet, "IPFS - Content Addressed, Versioned, P2P File System", 2014; the dag-pb and UnixFS
specs at https://github.com/ipfs/specs). The CID is the base58btc sha2-256 multihash of the root
node. The protobuf encoding is written here by hand, because it is the lesson: two messages and
varints, canonical field order (dag-pb puts Links before Data, each link with an empty Name).

Threat model: a CID binds a name to exactly one content. Whoever holds the CID can check what any
store hands back, so a store (or the network between) cannot swap content without being caught:
integrity, under sha2-256's collision resistance. A CID gives no confidentiality (anyone who can
read the store, or guess the content, reads or confirms it) and no availability (a store may
refuse or lose the content).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

CHUNK_SIZE = 256 * 1024
MAX_LINKS = 174

_SHA2_256 = b"\x12\x20"  # multihash: code 0x12 (sha2-256), 32-byte digest
_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_UNIXFS_FILE = 2


def b58encode(data: bytes) -> str:
    """Base58btc (Bitcoin's alphabet): each leading zero byte becomes a ``1``."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    digits = []
    while n:
        n, r = divmod(n, 58)
        digits.append(_ALPHABET[r])
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """The bytes that :func:`b58encode` turned into ``text``."""
    n = 0
    for position, char in enumerate(text):
        if char not in _INDEX:
            raise ValueError(
                f"{text!r} is not base58btc: {char!r} at position {position} is not in the alphabet"
            )
        n = n * 58 + _INDEX[char]
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + n.to_bytes((n.bit_length() + 7) // 8, "big")


def parse_cid(text: str) -> bytes:
    """The sha2-256 multihash that a CIDv0 (``Qm`` and 44 more base58btc characters) names.

    Anything else raises ValueError naming the text and what is wrong with it.
    """
    if not isinstance(text, str):
        raise TypeError(f"a CID is a str, got {type(text).__name__}")
    if len(text) != 46:
        raise ValueError(f"{text!r} is not a CIDv0: it has {len(text)} characters, not 46")
    if not text.startswith("Qm"):
        raise ValueError(f"{text!r} is not a CIDv0: it does not start with 'Qm'")
    multihash = b58decode(text)
    if len(multihash) != 34 or not multihash.startswith(_SHA2_256):
        raise ValueError(f"{text!r} is not a CIDv0: it does not name a sha2-256 multihash")
    return multihash


def cid_of(
    data: bytes | bytearray | memoryview,
    *,
    chunk_size: int = CHUNK_SIZE,
    max_links: int = MAX_LINKS,
) -> str:
    """The CIDv0 that Kubo's ``ipfs add`` gives ``data``; the defaults are Kubo's, and
    ``chunk_size`` is what ``ipfs add --chunker=size-N`` sets."""
    _check_layout(chunk_size, max_links)
    view = memoryview(data).cast("B")
    chunks = (view[i : i + chunk_size] for i in range(0, len(view), chunk_size))
    return _root_cid(chunks, max_links)


def cid_of_stream(
    stream: BinaryIO, *, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS
) -> str:
    """:func:`cid_of` of everything left in a binary stream, read one chunk at a time."""
    _check_layout(chunk_size, max_links)
    return _root_cid(_read_chunks(stream, chunk_size), max_links)


def _check_layout(chunk_size: int, max_links: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1 byte, got {chunk_size}")
    if max_links < 2:
        raise ValueError(f"max_links must be at least 2, got {max_links}")


def _read_chunks(stream: BinaryIO, size: int) -> Iterator[bytes]:
    while True:
        chunk = stream.read(size)
        while chunk and len(chunk) < size:  # a short read is not the end of the stream
            more = stream.read(size - len(chunk))
            if not more:
                break
            chunk += more
        if not chunk:
            return
        yield chunk


# A built node, as its parent links to it: multihash, Tsize (its block plus everything below),
# and how many file bytes it covers.
_Node = tuple[bytes, int, int]


def _root_cid(chunks: Iterable[bytes | memoryview], max_links: int) -> str:
    """Build the balanced tree bottom-up, keeping one list of pending nodes per level."""
    levels: list[list[_Node]] = [[]]
    for chunk in chunks:
        _push(levels, 0, _leaf(chunk), max_links)
    for level in range(len(levels) - 1):  # close every partly filled node, lowest first
        if levels[level]:
            _push(levels, level + 1, _branch(levels[level]), max_links)
            levels[level] = []
    top = levels[-1]
    if not top:  # an empty file is one empty leaf
        top = [_leaf(b"")]
    return b58encode(top[0][0] if len(top) == 1 else _branch(top)[0])


def _push(levels: list[list[_Node]], level: int, node: _Node, max_links: int) -> None:
    """Add a node at ``level``; a full level (``max_links`` nodes) becomes one node a level up."""
    if level == len(levels):
        levels.append([])
    levels[level].append(node)
    if len(levels[level]) == max_links:
        _push(levels, level + 1, _branch(levels[level]), max_links)
        levels[level] = []


def _leaf(chunk: bytes | memoryview) -> _Node:
    data = _field_varint(1, _UNIXFS_FILE)
    if len(chunk):
        data += _field_bytes(2, chunk)
    block = _field_bytes(1, data + _field_varint(3, len(chunk)))
    return _SHA2_256 + hashlib.sha256(block).digest(), len(block), len(chunk)


def _branch(children: list[_Node]) -> _Node:
    size = sum(covered for _, _, covered in children)
    data = _field_varint(1, _UNIXFS_FILE) + _field_varint(3, size)
    data += b"".join(_field_varint(4, covered) for _, _, covered in children)
    links = b"".join(
        _field_bytes(2, _field_bytes(1, mh) + _field_bytes(2, b"") + _field_varint(3, tsize))
        for mh, tsize, _ in children
    )
    block = links + _field_bytes(1, data)
    tsize = len(block) + sum(t for _, t, _ in children)
    return _SHA2_256 + hashlib.sha256(block).digest(), tsize, size


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, value: bytes | memoryview) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + bytes(value)
