"""A content store on a real IPFS daemon (Kubo, or js-ipfs as :mod:`.ipfs_daemon` starts it),
spoken to through its HTTP API with ipfshttpclient.

``put`` adds with the daemon's default chunker and layout, which are Kubo's, so the daemon names
the content with the same CIDv0 that :func:`~om_teach.storage.cid.cid_of` computes; a daemon that
names it otherwise is refused. ``get`` checks what the daemon serves against the CID.

Threat model: the daemon, its disk and the network to it are untrusted for integrity, which the
CID check gives (a block edited on the daemon's disk is caught). Content addressing gives no
confidentiality (whoever reaches the daemon's API or its peers reads everything stored, and
can confirm a guessed content from its CID) and no availability (the daemon may lose, unpin or
withhold content). Sonar stores only public models and gradients encrypted under the
scientist's Paillier key.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from .stores import ContentStore


class IpfsStore(ContentStore):
    """Bytes pinned on the IPFS daemon whose HTTP API listens at ``addr`` (a multiaddr).

    The daemon must answer when the store is made, else ConnectionError naming ``addr``.
    ``has`` means pinned (as ``put`` pins), so the daemon's garbage collector keeps the content.
    """

    def __init__(
        self,
        addr: str = "/ip4/127.0.0.1/tcp/5001/http",
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 60.0,
    ) -> None:
        try:
            import ipfshttpclient
        except ImportError as error:
            raise ImportError(
                "IpfsStore needs ipfshttpclient: pip install 'om-teach[ipfs]'"
            ) from error
        # ipfshttpclient 0.7 passes urllib3 2 a `strict` argument that it ignores and warns about.
        warnings.filterwarnings(
            "ignore", message="The 'strict' parameter is no longer needed", category=FutureWarning
        )
        self._errors = ipfshttpclient.exceptions
        self.addr = addr
        try:
            # connect() would refuse daemons newer than 0.7; the constructor skips that check.
            self._client = ipfshttpclient.Client(
                addr, session=True, timeout=(connect_timeout, read_timeout)
            )
        except ipfshttpclient.exceptions.AddressError as error:
            raise ValueError(f"{addr!r} is not an IPFS API multiaddr: {error}") from None
        try:
            self.version = str(self._call(self._client.version)["Version"])
        except BaseException:
            self._client.close()
            raise

    def __repr__(self) -> str:
        return f"IpfsStore({self.addr!r})"

    def __enter__(self) -> IpfsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session to the daemon."""
        self._client.close()

    def _put(self, cid: str, data: bytes) -> None:
        named = self._call(self._client.add_bytes, data)
        if named != cid:
            raise RuntimeError(
                f"the IPFS daemon at {self.addr} named the content {named}, not {cid} as Kubo's "
                "default `ipfs add` does: is it set to another chunker, layout or CID version?"
            )

    def _get(self, cid: str) -> bytes:
        if not self._has(cid):
            raise KeyError(f"{cid} is not pinned on the IPFS daemon at {self.addr}")
        return self._call(self._client.cat, cid, what=f"cat {cid}")

    def _has(self, cid: str) -> bool:
        try:
            self._call(self._client.pin.ls, cid, type="recursive")
        except self._errors.ErrorResponse as error:
            if "not pinned" in str(error):
                return False
            raise
        return True

    def _call(self, method: Callable[..., Any], *args: Any, what: str = "", **kwargs: Any) -> Any:
        """Call the daemon, turning a lost connection or a stall into the builtin errors."""
        try:
            return method(*args, **kwargs)
        except self._errors.TimeoutError as error:
            raise TimeoutError(
                f"the IPFS daemon at {self.addr} did not answer {what or method.__name__!r} "
                f"in time: {error}"
            ) from None
        except self._errors.ConnectionError as error:
            raise ConnectionError(f"no IPFS API answers at {self.addr}: {error}") from None
