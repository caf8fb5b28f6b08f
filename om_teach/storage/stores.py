"""Content-addressed stores: put bytes, get them back by their CID, and check them on the way out.

Every store recomputes the CID of what it reads and refuses content that does not match it, so a
reader trusts only the CID it was given, never the store: a tampered block (a file edited on disk,
a daemon serving something else) raises :class:`TamperedContentError` instead of reaching a
model or a gradient sum.

Threat model: the store is untrusted for integrity, which the CID check gives. It is trusted for
nothing else: content addressing gives no confidentiality (anyone who can read the store reads
what is stored, and anyone who can guess a content can confirm it from its CID) and no
availability (a store may lose or withhold content; ``get`` then raises KeyError). Sonar stores
only public models and gradients encrypted under the scientist's Paillier key, so what the store
reveals is what the protocol already publishes.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

from .cid import cid_of, parse_cid


class TamperedContentError(Exception):
    """A store handed back content whose CID is not the one asked for."""

    def __init__(self, cid: str, actual: str, where: str) -> None:
        super().__init__(
            f"content for {cid} from {where} does not match its CID (it hashes to {actual}): "
            "the store was tampered with or corrupted"
        )
        self.cid = cid
        self.actual = actual


class ContentStore(ABC):
    """Bytes by their CIDv0: ``put`` returns the CID, ``get`` returns only matching content."""

    def put(self, data: bytes) -> str:
        """Store ``data`` and return its CIDv0 (storing the same bytes twice is harmless)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"a store keeps bytes, got {type(data).__name__}")
        data = bytes(data)
        cid = cid_of(data)
        self._put(cid, data)
        return cid

    def get(self, cid: str) -> bytes:
        """The content named ``cid``: KeyError if absent, TamperedContentError if it does not
        hash to ``cid``."""
        parse_cid(cid)
        data = self._get(cid)
        actual = cid_of(data)
        if actual != cid:
            raise TamperedContentError(cid, actual, repr(self))
        return data

    def has(self, cid: str) -> bool:
        """Whether the store holds content under ``cid`` (not checked against it: ``get`` does)."""
        parse_cid(cid)
        return self._has(cid)

    @abstractmethod
    def _put(self, cid: str, data: bytes) -> None:
        """Keep ``data``, whose CID is ``cid``."""

    @abstractmethod
    def _get(self, cid: str) -> bytes:
        """The stored bytes under ``cid``, unchecked; KeyError naming ``cid`` if absent."""

    @abstractmethod
    def _has(self, cid: str) -> bool:
        """Whether anything is stored under ``cid``."""


class MemoryStore(ContentStore):
    """A dict in this process: for a notebook or a simulation where every party is one process."""

    def __init__(self) -> None:
        self._blocks: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._blocks)} items)"

    def _put(self, cid: str, data: bytes) -> None:
        self._blocks[cid] = data

    def _get(self, cid: str) -> bytes:
        try:
            return self._blocks[cid]
        except KeyError:
            raise KeyError(f"{cid} is not in {self!r}") from None

    def _has(self, cid: str) -> bool:
        return cid in self._blocks


class DirectoryStore(ContentStore):
    """One file per CID under a folder, shared by separate processes (the platform's default).

    A file is written to a temporary name in the same folder, synced, renamed into place and the
    folder synced, so a reader sees either nothing or the whole content, even after a crash;
    concurrent writers of the same content replace one whole file with another (a damaged file
    is repaired by putting its content again).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    def path(self, cid: str) -> Path:
        """Where the content named ``cid`` lives (or would)."""
        parse_cid(cid)
        return self.root / cid

    def _put(self, cid: str, data: bytes) -> None:
        fd, temporary = tempfile.mkstemp(dir=self.root, prefix=f".{cid}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.root / cid)
            directory = os.open(self.root, os.O_RDONLY)
            try:  # the rename itself survives a power loss only once the folder is synced
                os.fsync(directory)
            finally:
                os.close(directory)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _get(self, cid: str) -> bytes:
        try:
            return (self.root / cid).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"{cid} is not in {self!r}") from None

    def _has(self, cid: str) -> bool:
        return (self.root / cid).is_file()
