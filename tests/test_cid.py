"""CIDv0 computation against Kubo's golden values, Debian's ipfs_cid, and go's balanced layout."""

from __future__ import annotations

import io
import random
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from om_teach.storage import cid as cid_module
from om_teach.storage.cid import (
    CHUNK_SIZE,
    MAX_LINKS,
    b58decode,
    b58encode,
    cid_of,
    cid_of_stream,
    parse_cid,
)

GOLDEN = [
    (b"hello world\n", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"),
    (b"", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"),
    (random.Random(1).randbytes(1024), "QmZugoEcQT73VWCWEGmHqi2y1DLYHdRF5g5HHYL8kxryPy"),
    (random.Random(42).randbytes(1 << 20), "QmPE1Twd2RpFKAP9ZAKVtUVHjmU9hRuLDYAUy5eXPpz4Qf"),
]
GOLDEN_45_MIB = "Qmanosme7D8CD19jgqB9nwDU6MujgBwVs8s3xZi88W9dCn"


@pytest.mark.parametrize(("data", "expected"), GOLDEN, ids=["hello", "empty", "1KiB", "1MiB"])
def test_golden_cids(data, expected):
    """Small files get Kubo's CIDs, whole and streamed."""
    assert cid_of(data) == expected
    assert cid_of_stream(io.BytesIO(data)) == expected


class ShortReads(io.RawIOBase):
    """A stream that hands back at most a few thousand bytes per read, like a pipe."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at, self._rng = data, 0, random.Random(0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._rng.randint(1, 5000), len(self._data) - self._at)
        buffer[:n] = self._data[self._at : self._at + n]
        self._at += n
        return n


def test_golden_45_mib_uses_two_levels():
    """45 MiB is 180 chunks, more than 174 links: Kubo's CID needs a second tree level."""
    data = random.Random(7).randbytes(45 << 20)
    assert len(data) // CHUNK_SIZE > MAX_LINKS
    assert cid_of(data) == GOLDEN_45_MIB
    assert cid_of_stream(io.BytesIO(data)) == GOLDEN_45_MIB


def test_stream_with_short_reads():
    """A stream that returns short reads is chunked exactly like the whole bytes."""
    data, expected = GOLDEN[3]
    assert cid_of_stream(ShortReads(data)) == expected


def balanced_layout(data: bytes, chunk_size: int, max_links: int) -> str:
    """go-unixfs's balanced.Layout, transliterated: grow the root one depth at a time, filling
    each new root's children recursively (fillNodeRec) until the chunks run out."""
    chunks = iter([data[i : i + chunk_size] for i in range(0, len(data), chunk_size)])
    pending = [next(chunks, None)]

    def next_leaf():
        chunk, pending[0] = pending[0], next(chunks, None)
        return cid_module._leaf(chunk)

    def fill(children, depth):
        while len(children) < max_links and pending[0] is not None:
            if depth == 1:
                children.append(next_leaf())
            else:
                grandchildren = []
                fill(grandchildren, depth - 1)
                children.append(cid_module._branch(grandchildren))

    if pending[0] is None:
        return b58encode(cid_module._leaf(b"")[0])
    root = next_leaf()
    depth = 1
    while pending[0] is not None:
        children = [root]
        fill(children, depth)
        root = cid_module._branch(children)
        depth += 1
    return b58encode(root[0])


@pytest.mark.parametrize("max_links", [2, 3, 5])
def test_layout_matches_go_balanced_builder(max_links):
    """With tiny chunks and fan-out, trees four or more levels deep match go's builder."""
    data = bytes(range(256)) * 2
    for n in range(0, 200, 3):
        assert cid_of(data[:n], chunk_size=2, max_links=max_links) == balanced_layout(
            data[:n], 2, max_links
        ), n


def test_layout_arguments_are_checked():
    """A chunk size below 1 byte or fewer than 2 links per node is refused."""
    with pytest.raises(ValueError, match="chunk_size"):
        cid_of(b"x", chunk_size=0)
    with pytest.raises(ValueError, match="max_links"):
        cid_of_stream(io.BytesIO(b"x"), max_links=1)


@pytest.mark.skipif(shutil.which("ipfs_cid") is None, reason="Debian's ipfs-cid is not installed")
def test_cross_check_with_debian_ipfs_cid(tmp_path):
    """Around every chunk and link boundary, Debian's ipfs_cid gives the same CIDs."""
    data = random.Random(3).randbytes(MAX_LINKS * CHUNK_SIZE + 1)
    sizes = [1, 1000, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 5 * CHUNK_SIZE + 7]
    for size in [*sizes, MAX_LINKS * CHUNK_SIZE, MAX_LINKS * CHUNK_SIZE + 1]:
        path = tmp_path / "file"
        path.write_bytes(data[:size])
        done = subprocess.run(["ipfs_cid", str(path)], capture_output=True, text=True, check=True)
        assert f'"CIDv0":"{cid_of(data[:size])}"' in done.stdout, size


def test_base58_known_answers():
    """Base58btc matches Bitcoin's: leading zero bytes become 1s."""
    assert b58encode(b"hello world") == "StV1DL6CwTryKyV"
    assert b58encode(b"\0\0\x01") == "112"
    assert b58encode(b"") == ""
    assert b58decode("112") == b"\0\0\x01"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_base58_round_trip(data):
    """Decoding an encoding gives the bytes back, leading zeros included."""
    assert b58decode(b58encode(data)) == data


def test_parse_cid_gives_the_multihash():
    """A CIDv0 decodes to 0x12 0x20 and the sha2-256 of its root block."""
    multihash = parse_cid(GOLDEN[0][1])
    assert multihash[:2] == b"\x12\x20"
    assert len(multihash) == 34
    assert b58encode(multihash) == GOLDEN[0][1]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5", "45 characters, not 46"),
        ("bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby", "59 characters"),
        ("ZmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", "does not start with 'Qm'"),
        ("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff0o", "'0' at position 44"),
        ("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ffIo", "'I' at position 44"),
        ("Qm" + "z" * 44, "not name a sha2-256 multihash"),
        ("Qm" + "1" * 44, "not name a sha2-256 multihash"),
    ],
)
def test_parse_cid_refuses_malformed(text, problem):
    """A malformed CID raises ValueError naming the text and what is wrong."""
    with pytest.raises(ValueError, match=problem) as raised:
        parse_cid(text)
    assert repr(text) in str(raised.value)


def test_parse_cid_refuses_non_text():
    """Bytes are not a CID's text."""
    with pytest.raises(TypeError, match="bytes"):
        parse_cid(GOLDEN[0][1].encode())
