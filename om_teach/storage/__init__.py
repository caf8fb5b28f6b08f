"""Content-addressed storage for the Sonar platform: bytes named by their IPFS CIDv0.

:func:`cid_of` computes the CID exactly as Kubo's default ``ipfs add`` does, and every store checks
what it hands back against it: :class:`MemoryStore` for one process, :class:`DirectoryStore` for
processes sharing a folder (the platform's default), :class:`IpfsStore` for a real IPFS daemon,
such as the local js-ipfs one that :class:`JsIpfsDaemon` starts.

Threat model: content addressing gives integrity (a store cannot swap what a CID names without
:class:`TamperedContentError`), not confidentiality (anyone who can read a store reads what is
stored) and not availability (a store may lose or withhold content). Sonar stores only public
models and gradients encrypted under the scientist's Paillier key.
"""

from .cid import cid_of, cid_of_stream, parse_cid
from .ipfs import IpfsStore
from .ipfs_daemon import JsIpfsDaemon
from .stores import ContentStore, DirectoryStore, MemoryStore, TamperedContentError

__all__ = [
    "ContentStore",
    "DirectoryStore",
    "IpfsStore",
    "JsIpfsDaemon",
    "MemoryStore",
    "TamperedContentError",
    "cid_of",
    "cid_of_stream",
    "parse_cid",
]
