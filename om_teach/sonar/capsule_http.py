"""The capsule's HTTP API: the server a capsule process runs on 127.0.0.1, and the client the
data scientist uses.

Routes: ``GET /record`` (the key record, byte for byte, for mines to check against their
fingerprint), ``GET /status``, and ``POST /models/M/rounds/R/aggregate`` (the round's noisy
sum and the capsule's signed settlement). Nothing else is answered: in particular, nobody can
hand the capsule a ciphertext to decrypt, since it fetches each round's contributions itself.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import numpy as np

from om_teach.sonar.capsule import Capsule, CapsuleRefusal, Settlement
from om_teach.sonar.record import KeyRecord

if TYPE_CHECKING:
    from om_teach.sonar.scientist import RoundSum

NO_CIPHERTEXTS = "the capsule decrypts only round aggregates it fetches itself"
MAX_BODY = 1 << 20
_AGGREGATE_ROUTE = re.compile(r"/models/(\d+)/rounds/(\d+)/aggregate/?")


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _Handler(BaseHTTPRequestHandler):
    """The capsule's routes; everything else is refused."""

    server: CapsuleServer

    def do_GET(self) -> None:
        capsule = self.server.capsule
        if self.path == "/record":
            self._reply_bytes(200, capsule.record.to_bytes())
        elif self.path == "/status":
            self._reply(
                200,
                {
                    "fingerprint": capsule.fingerprint,
                    "min_contributors": capsule.min_contributors,
                    "noise_multiplier": capsule.noise_multiplier,
                    "epsilon_spent": _finite_or_none(capsule.epsilon_spent),
                    "epsilon_total": _finite_or_none(capsule.epsilon_total),
                    "decrypted_rounds": capsule.decrypted_rounds,
                    "admitted": capsule.admitted,
                },
            )
        else:
            self._reply(404, {"error": f"no route GET {self.path}: try /record or /status"})

    def do_POST(self) -> None:
        body = self._body()
        if body is None:
            return
        route = _AGGREGATE_ROUTE.fullmatch(self.path)
        if route is None or b"ciphertext" in body.lower() or b"sealed" in body.lower():
            self._reply(400, {"error": NO_CIPHERTEXTS})
            return
        if body.strip() not in (b"", b"{}"):
            self._reply(400, {"error": "the aggregate request takes no body"})
            return
        model_id, round = int(route[1]), int(route[2])
        try:
            result = self.server.capsule.aggregate(model_id, round)
        except CapsuleRefusal as refusal:
            self._reply(refusal.status, {"error": refusal.message})
            return
        except Exception as error:  # a chain or store that fails answers 502, naming why
            self._reply(502, {"error": f"{type(error).__name__}: {error}"})
            return
        self._reply(
            200,
            {
                "sum": result.sum.tolist(),
                "contributors": result.contributors,
                "epsilon_spent": _finite_or_none(result.epsilon_spent),
                "epsilon_total": _finite_or_none(result.epsilon_total),
                "settlement": result.settlement.to_dict(),
            },
        )

    def do_PUT(self) -> None:
        self._reply(400, {"error": NO_CIPHERTEXTS})

    def _body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._reply(400, {"error": "send a Content-Length, not a chunked body"})
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self._reply(400, {"error": "Content-Length is not an integer"})
            return None
        if not 0 <= length <= MAX_BODY:
            self._reply(400, {"error": f"a body of {length} bytes; at most {MAX_BODY}"})
            return None
        return self.rfile.read(length)

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        self._reply_bytes(status, json.dumps(payload).encode())

    def _reply_bytes(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the platform reads the capsule's stdout for its ready line."""


class CapsuleServer(ThreadingHTTPServer):
    """The capsule's HTTP API on 127.0.0.1 (``port`` 0 picks a free one)."""

    daemon_threads = True

    def __init__(self, capsule: Capsule, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.capsule = capsule

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class CapsuleClient:
    """The data scientist's side of the capsule: its key record and round aggregates.

    ``aggregate`` has the signature of the scientist's aggregators; the ε of the last release
    is kept in :attr:`last_epsilon_spent` and :attr:`last_epsilon_total` (infinite when the
    capsule's noise is off or seeded).
    """

    def __init__(self, url: str, *, timeout: float = 120.0) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"expected the capsule's http(s) URL, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.last_epsilon_spent: float | None = None
        self.last_epsilon_total: float | None = None

    def __repr__(self) -> str:
        return f"CapsuleClient({self.url!r})"

    def record(self, fingerprint: str | None = None) -> KeyRecord:
        """The capsule's key record, checked against ``fingerprint`` when one is given."""
        from om_teach.sonar.record import fetch_record

        if fingerprint is not None:
            return fetch_record(self.url, fingerprint, timeout=self.timeout)
        return KeyRecord.from_bytes(self._request("GET", "/record", raw=True))

    def status(self) -> dict[str, Any]:
        """The capsule's settings, ε spent, released rounds and admitted mines."""
        return self._request("GET", "/status")

    def aggregate(self, model_id: int, round: int) -> RoundSum:
        """The round's noisy gradient sum, its contributors and the capsule's settlement;
        CapsuleRefusal if the capsule refuses."""
        from om_teach.sonar.scientist import RoundSum

        reply = self._request("POST", f"/models/{int(model_id)}/rounds/{int(round)}/aggregate")
        spent, total = reply["epsilon_spent"], reply["epsilon_total"]
        self.last_epsilon_spent = math.inf if spent is None else float(spent)
        self.last_epsilon_total = math.inf if total is None else float(total)
        settlement = Settlement.from_dict(reply["settlement"])
        return RoundSum(np.asarray(reply["sum"], dtype=float), tuple(settlement.summed), settlement)

    def _request(self, method: str, path: str, *, raw: bool = False) -> Any:
        data = b"" if method == "POST" else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
                return body if raw else json.loads(body)
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read())["error"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {error.code} {error.reason}"
            raise CapsuleRefusal(message, error.code) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ConnectionError(f"no capsule answers at {self.url}: {reason}") from error
