"""The content stores (memory, directory, a real js-ipfs daemon) against one contract, and their
refusal of tampered blocks, missing content and bad input."""

from __future__ import annotations

import base64
import functools
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from om_teach.storage import (
    DirectoryStore,
    IpfsStore,
    JsIpfsDaemon,
    MemoryStore,
    TamperedContentError,
    cid_of,
    parse_cid,
)
from om_teach.storage.cid import CHUNK_SIZE
from om_teach.storage.ipfs_daemon import default_jsipfs

HELLO = (b"hello world\n", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")
MEBIBYTE = (random.Random(42).randbytes(1 << 20), "QmPE1Twd2RpFKAP9ZAKVtUVHjmU9hRuLDYAUy5eXPpz4Qf")
EMPTY = (b"", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH")
ABSENT = cid_of(b"never stored anywhere")

HAS_NODE = shutil.which("node") is not None
needs_node = pytest.mark.skipif(not HAS_NODE, reason="Node.js is not installed")


def skip_without_jsipfs() -> None:
    if not (HAS_NODE and default_jsipfs().exists()):
        pytest.skip(f"js-ipfs is not installed (no {default_jsipfs()}): run `npm install`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One offline js-ipfs daemon for the module, stopped by its PID whatever happens."""
    skip_without_jsipfs()
    running = JsIpfsDaemon(tmp_path_factory.mktemp("ipfs") / "repo", free_port())
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(params=["memory", "directory", "ipfs"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "directory":
        yield DirectoryStore(tmp_path / "store")
    else:
        with IpfsStore(request.getfixturevalue("daemon").addr) as ipfs:
            yield ipfs


def flip_a_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :]


def block_file(daemon: JsIpfsDaemon, cid: str):
    """Where js-ipfs keeps a block: flatfs, keyed by the base32 multihash, sharded by the
    next-to-last two characters."""
    key = base64.b32encode(parse_cid(cid)).decode().rstrip("=")
    return daemon.repo_dir / "blocks" / key[-3:-1] / f"{key}.data"


def tamper(store, data: bytes, request) -> None:
    """Change one byte of what ``store`` really keeps for ``data``: the dict entry, the file on
    disk, or a block on the daemon's disk (the second chunk's leaf when there are several)."""
    cid = cid_of(data)
    if isinstance(store, MemoryStore):
        store._blocks[cid] = flip_a_byte(store._blocks[cid])
    elif isinstance(store, DirectoryStore):
        store.path(cid).write_bytes(flip_a_byte(store.path(cid).read_bytes()))
    else:
        leaf = cid_of(data[CHUNK_SIZE : 2 * CHUNK_SIZE]) if len(data) > CHUNK_SIZE else cid
        path = block_file(request.getfixturevalue("daemon"), leaf)
        path.write_bytes(flip_a_byte(path.read_bytes()))


@pytest.mark.parametrize(("data", "expected"), [HELLO, MEBIBYTE, EMPTY], ids=["12B", "1MiB", "0B"])
def test_round_trip(store, data, expected):
    """put returns Kubo's CID, and get gives the bytes back."""
    assert store.put(data) == expected
    assert store.has(expected)
    assert store.get(expected) == data


def test_put_is_idempotent(store):
    """Storing the same bytes twice gives the same CID and the same content."""
    assert store.put(HELLO[0]) == store.put(bytearray(HELLO[0])) == HELLO[1]
    assert store.get(HELLO[1]) == HELLO[0]


def test_missing_content_raises_key_error(store):
    """get of a well-formed CID the store lacks raises KeyError naming it."""
    assert not store.has(ABSENT)
    with pytest.raises(KeyError, match=ABSENT):
        store.get(ABSENT)


@pytest.mark.parametrize("bad", ["QmNotACid", "Qm" + "0" * 44, "bafyfoo"])
def test_malformed_cid_is_refused(store, bad):
    """get and has refuse a malformed CID with ValueError naming it."""
    with pytest.raises(ValueError, match=bad):
        store.get(bad)
    with pytest.raises(ValueError, match=bad):
        store.has(bad)


def test_put_refuses_non_bytes(store):
    """Text is not bytes: encode it first."""
    with pytest.raises(TypeError, match="str"):
        store.put("hello world\n")


@pytest.mark.parametrize("size", [100, 3 * CHUNK_SIZE + 5], ids=["one-block", "many-blocks"])
def test_tampered_content_is_refused(store, request, size):
    """A stored block changed behind the store's back makes get raise, naming the CID."""
    data = random.Random(size).randbytes(size)  # content no other test stores on the daemon
    cid = store.put(data)
    tamper(store, data, request)
    with pytest.raises(TamperedContentError, match=cid) as raised:
        store.get(cid)
    assert raised.value.cid == cid
    assert raised.value.actual != cid
    assert store.put(data) == cid  # putting the content again repairs it where the store can
    if not isinstance(store, IpfsStore):  # js-ipfs keeps a block it already has as it is
        assert store.get(cid) == data


def test_directory_store_names_files_by_cid(tmp_path):
    """Each content is one file named by its CID, holding exactly the bytes."""
    store = DirectoryStore(tmp_path)
    store.put(HELLO[0])
    store.put(EMPTY[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([HELLO[1], EMPTY[1]])
    assert (tmp_path / HELLO[1]).read_bytes() == HELLO[0]


def test_directory_store_truncated_file_is_refused(tmp_path):
    """Half a file (as a crash mid-write without rename would leave) is never served."""
    store = DirectoryStore(tmp_path)
    store.put(MEBIBYTE[0])
    path = store.path(MEBIBYTE[1])
    path.write_bytes(path.read_bytes()[: len(MEBIBYTE[0]) // 2])
    with pytest.raises(TamperedContentError, match=MEBIBYTE[1]):
        store.get(MEBIBYTE[1])


def test_directory_store_failed_write_leaves_nothing(tmp_path, monkeypatch):
    """A write that fails (a full disk, say) leaves neither the file nor its temporary."""
    store = DirectoryStore(tmp_path)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.put(HELLO[0])
    assert list(tmp_path.iterdir()) == []
    assert not store.has(HELLO[1])


WRITER = """
import random, sys
from om_teach.storage import DirectoryStore
store = DirectoryStore(sys.argv[1])
contents = [random.Random(seed).randbytes(1 << 20) for seed in range(3)]
for _ in range(8):
    for data in contents:
        store.put(data)
"""


def test_directory_store_shared_between_processes(tmp_path):
    """Two processes rewrite the same files while this one reads: every read is whole."""
    contents = [random.Random(seed).randbytes(1 << 20) for seed in range(3)]
    cids = [cid_of(data) for data in contents]
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)]) for _ in range(2)]
    store = DirectoryStore(tmp_path)
    whole_reads = 0
    while any(w.poll() is None for w in writers):
        for data, cid in zip(contents, cids, strict=True):
            try:
                assert store.get(cid) == data
                whole_reads += 1
            except KeyError:
                pass
    assert [w.wait() for w in writers] == [0, 0]
    assert [store.get(cid) for cid in cids] == contents
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(cids)  # no temporaries left
    assert whole_reads > 0


def test_ipfs_store_unreachable_address():
    """A daemon that does not answer gives a ConnectionError naming its address, at once."""
    addr = "/ip4/127.0.0.1/tcp/1/http"
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=addr):
        IpfsStore(addr)
    assert time.monotonic() - started < 10


def test_ipfs_store_malformed_address():
    """An address that is not a multiaddr is refused with ValueError naming it."""
    with pytest.raises(ValueError, match=re.escape("127.0.0.1:5001")):
        IpfsStore("127.0.0.1:5001")


def test_daemon_chunks_like_cid_module(daemon):
    """The daemon's CIDs for a non-default chunker match cid_of with that chunk size."""
    data = random.Random(5).randbytes(300_000)
    with IpfsStore(daemon.addr) as store:
        for size in (1000, 65536):
            added = store._client.add_bytes(data, opts={"chunker": f"size-{size}"})
            assert added == cid_of(data, chunk_size=size)


def test_ipfs_store_refuses_a_daemon_that_names_otherwise(daemon, monkeypatch):
    """A daemon whose add does not chunk like Kubo's default is refused on put."""
    data = random.Random(6).randbytes(5000)
    with IpfsStore(daemon.addr) as store:
        other_chunker = functools.partial(store._client.add_bytes, opts={"chunker": "size-1000"})
        monkeypatch.setattr(store._client, "add_bytes", other_chunker)
        with pytest.raises(RuntimeError, match=cid_of(data)):
            store.put(data)


def test_daemon_restart_keeps_content(daemon):
    """A stopped daemon is gone (its PID and its API), and a restart serves what it kept."""
    data = b"kept across a restart"
    with IpfsStore(daemon.addr) as store:
        cid = store.put(data)
    pid = daemon.process.pid
    daemon.stop()
    try:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        with pytest.raises(ConnectionError, match=daemon.addr):
            IpfsStore(daemon.addr)
    finally:
        daemon.start()
    assert daemon.process.pid != pid
    with IpfsStore(daemon.addr) as store:
        assert store.get(cid) == data


def fake_daemon(tmp_path, script: str, **options) -> JsIpfsDaemon:
    """A JsIpfsDaemon whose jsipfs is ``script``, on an already initialised repo."""
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "config").write_text(json.dumps({"Identity": {"PeerID": "12D3Koo"}}))
    (tmp_path / "fake.js").write_text(script)
    return JsIpfsDaemon(tmp_path / "repo", free_port(), jsipfs=tmp_path / "fake.js", **options)


@needs_node
def test_daemon_that_exits_names_its_log(tmp_path):
    """A daemon that dies while starting raises an error quoting its log."""
    daemon = fake_daemon(tmp_path, "console.error('repo is locked'); process.exit(3)")
    with pytest.raises(RuntimeError, match="exited \\(3\\)") as raised:
        daemon.start()
    assert str(daemon.log_path) in str(raised.value)
    assert "repo is locked" in str(raised.value)


@needs_node
def test_daemon_that_never_answers_times_out_and_is_killed(tmp_path):
    """A daemon whose API never answers is stopped after the timeout, naming its log."""
    daemon = fake_daemon(tmp_path, "setInterval(() => {}, 1000)", startup_timeout=1)
    with pytest.raises(TimeoutError, match="did not answer within 1 s") as raised:
        daemon.start()
    assert str(daemon.log_path) in str(raised.value)
    assert daemon.process is None and not daemon.running


def test_daemon_refuses_a_port_out_of_range(tmp_path):
    """A port outside 1-65535 is refused before anything starts."""
    with pytest.raises(ValueError, match="70000"):
        JsIpfsDaemon(tmp_path, 70000)
