"""The capsule (Sonar's Helium milestone): a separate process that holds the Paillier key pair
and decrypts only each round's noised, aggregated gradient.

In Hydrogen the data scientist holds the private key, so it could decrypt any mine's gradient
on the public store. Helium moves the key into a capsule (OpenMined's roadmap: "improve
security by trusted component with key ownership; tackle the differential privacy issue by
shielding individual gradients from the data scientist"). Once per round the capsule reads the
round's gradient CIDs and submitters from the ModelRepository contract itself, fetches the
ciphertexts from the store itself, sums them homomorphically (Paillier, EUROCRYPT 1999), and
decrypts only the sum, only when at least k distinct addresses contributed. It adds Gaussian
noise N(0, (zC)²) per coordinate (DP-FedAvg: McMahan et al., ICLR 2018), C being the clip norm
of the round's model bundle, and charges each release to a run budget accounted by RDP at
δ = 1e-5 (Mironov, Talwar and Zhang, 2019). Every round takes all the mines that submit, with
no sampling, so each release is accounted at sample_rate 1: the honest choice, which claims
no amplification by sampling. The budget covers every model and round this capsule releases,
since they may all be trained on the same mines' rows.

Threat model. Parties: mines (data owners), the data scientist, the store, the chain, the
capsule.

* The scientist learns only, per round, the noisy sum of at least k gradients, each (if its
  mine is honest) clipped to L2 norm C. It never holds the private key: no route returns it,
  and the capsule refuses any ciphertext handed to it, a second decryption of a round, and any
  release the budget cannot afford. With z > 0 what all releases together reveal about any one
  mine is (ε, δ)-bounded (user level), whoever the other contributors are.
* The capsule learns each round's exact sum. It holds the private key and fetches every
  ciphertext, so it COULD decrypt a single gradient: it is trusted to decrypt only sums. That
  is Helium's trust assumption; secure aggregation (Bonawitz et al., CCS 2017) or a threshold
  key shared among several parties would remove it. It is also trusted to add the noise and
  account it honestly; its noise comes from numpy's generator, which is not
  cryptographically secure.
* The k threshold counts addresses. An adversary controlling k - 1 submitting addresses (a
  Sybil) can isolate one mine's gradient in a sum: only the noise bounds what that reveals, so
  z = 0 (the course's accuracy comparison) gives no protection against it. The capsule refuses
  what it can detect: a CID submitted twice in a round or reused from a round already
  aggregated, and a submission that claims to sum more than one encryption. A re-randomized
  copy of another mine's ciphertext cannot be detected (Paillier is malleable).
* Mines are trusted to clip to C; the capsule checks only each value against the layout's
  max_abs. The chain and the store are untrusted for integrity: content whose CID does not
  match, a ciphertext under another key, or one of the wrong layout is refused, naming it.

The key, the budget and the set of decrypted rounds live only in this process: restarting it
makes a new key, so old ciphertexts can no longer be decrypted at all; a new run's budget
composes with the old run's releases, which the operator must add up.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import numpy as np
from phe import PaillierPublicKey

from om_teach.crypto.paillier import DEFAULT_KEY_BITS, EncryptedVector, generate_keypair
from om_teach.privacy.updates import noisy_sum
from om_teach.sonar.model import ModelBundle

if TYPE_CHECKING:
    from om_teach.sonar.contract import ModelRepository
    from om_teach.storage import ContentStore

DELTA = 1e-5
SAMPLE_RATE = 1.0
"""Every mine that submits takes part in its round: no sampling, so no amplification."""
NO_CIPHERTEXTS = "the capsule decrypts only round aggregates it fetches itself"
MAX_BODY = 1 << 20
_AGGREGATE_ROUTE = re.compile(r"/models/(\d+)/rounds/(\d+)/aggregate/?")


class CapsuleRefusal(Exception):
    """The capsule refused a request; ``status`` is the HTTP status it answers with
    (400 bad input, 403 policy: too few contributors or over budget, 404 not found,
    409 already decrypted)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Aggregate:
    """One round's release: the (noisy) sum of ``contributors`` gradients, the ε at δ = 1e-5
    the capsule has spent so far in total after it, and the run's budget ``epsilon_total``
    (both infinite when the noise is off)."""

    sum: np.ndarray
    contributors: int
    epsilon_spent: float
    epsilon_total: float


class Capsule:
    """The key holder: generates a Paillier key pair and releases round aggregates.

    ``repository`` is the contract client the round's CIDs and submitters are read from,
    ``store`` where their ciphertexts and the model bundles are fetched from. A round is
    released only with at least ``min_contributors`` distinct submitters, with noise
    ``noise_multiplier`` × the bundle's clip norm (0 turns noise and accounting off), and
    while the ``budget`` (ε at δ = 1e-5) allows it.
    """

    def __init__(
        self,
        repository: ModelRepository,
        store: ContentStore,
        *,
        key_bits: int = DEFAULT_KEY_BITS,
        min_contributors: int = 3,
        noise_multiplier: float = 1.0,
        budget: float = 10.0,
        rng: np.random.Generator | None = None,
    ) -> None:
        from om_teach.privacy.accounting import Budget

        if isinstance(min_contributors, bool) or not isinstance(min_contributors, int):
            raise TypeError(
                f"min_contributors must be an int, not {type(min_contributors).__name__}"
            )
        if min_contributors < 1:
            raise ValueError(f"min_contributors must be at least 1, got {min_contributors}")
        if isinstance(noise_multiplier, bool) or not isinstance(noise_multiplier, int | float):
            raise TypeError(
                f"noise_multiplier must be a number, not {type(noise_multiplier).__name__}"
            )
        if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
            raise ValueError(
                f"noise_multiplier must be finite and non-negative, got {noise_multiplier}"
            )
        self.repository = repository
        self.store = store
        self.min_contributors = min_contributors
        self.noise_multiplier = float(noise_multiplier)
        self.budget = Budget(epsilon=budget, delta=DELTA)
        self._rng = rng if rng is not None else np.random.default_rng()
        self._public_key, self._private_key = generate_keypair(key_bits)
        self._decrypted: set[tuple[int, int]] = set()
        self._used_cids: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"<Capsule {self._public_key.n.bit_length()}-bit key, k={self.min_contributors}, "
            f"z={self.noise_multiplier:g}, epsilon {self.epsilon_spent:.4g}/"
            f"{self.epsilon_total:g}>"
        )

    @property
    def public_key(self) -> PaillierPublicKey:
        """The key mines encrypt their gradients under (the private key never leaves)."""
        return self._public_key

    @property
    def epsilon_spent(self) -> float:
        """ε at δ = 1e-5 spent by every release so far (infinite when the noise is off)."""
        return math.inf if self._noiseless else self.budget.spent

    @property
    def epsilon_total(self) -> float:
        """The run's budget (infinite when the noise is off: there is no guarantee)."""
        return math.inf if self._noiseless else self.budget.epsilon

    @property
    def decrypted_rounds(self) -> list[tuple[int, int]]:
        """The (model, round) pairs already released, in order."""
        return sorted(self._decrypted)

    @property
    def _noiseless(self) -> bool:
        return self.noise_multiplier == 0

    def aggregate(self, model_id: int, round: int) -> Aggregate:
        """Release the noisy sum of round ``round`` of model ``model_id``, or raise
        :class:`CapsuleRefusal` saying why not, having recorded and spent nothing (except that
        a sum that fails to decrypt still uses up its round)."""
        for name, value in (("model_id", model_id), ("round", round)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CapsuleRefusal(f"{name} must be a non-negative int, got {value!r}")
        with self._lock:
            return self._aggregate(model_id, round)

    def _aggregate(self, model_id: int, round: int) -> Aggregate:
        if (model_id, round) in self._decrypted:
            raise CapsuleRefusal(
                f"round {round} of model {model_id} was already decrypted: the capsule "
                "decrypts each round once",
                409,
            )
        current = self._current_round(model_id, round)
        cids, submitters = self._round_submissions(model_id, round)
        bundle = self._bundle(model_id, round, current)
        clip_norm = bundle.clip_norm
        if not self._noiseless:
            cost = self.budget.cost(noise_multiplier=self.noise_multiplier, sample_rate=SAMPLE_RATE)
            if cost > self.budget.epsilon:
                raise CapsuleRefusal(
                    f"releasing round {round} of model {model_id} would bring epsilon to "
                    f"{cost:.4g}, over the budget of {self.budget.epsilon:g} at delta={DELTA:g} "
                    f"({self.budget.spent:.4g} spent); refused",
                    403,
                )
        vectors = [
            self._ciphertext(cid, submitter, bundle)
            for cid, submitter in zip(cids, submitters, strict=True)
        ]
        if len(vectors) > bundle.max_summands:
            raise CapsuleRefusal(
                f"round {round} has {len(vectors)} gradients, more than the bundle's "
                f"max_summands {bundle.max_summands}: their sum could overflow"
            )
        self._decrypted.add((model_id, round))
        for cid in cids:
            self._used_cids[cid] = (model_id, round)
        try:
            total = EncryptedVector.sum(vectors).decrypt(self._private_key)
        except ValueError as error:
            raise CapsuleRefusal(f"the sum of round {round} does not decrypt: {error}") from error
        if self._noiseless:
            return Aggregate(total, len(vectors), math.inf, math.inf)
        noisy = noisy_sum(
            total, clip_norm=clip_norm, noise_multiplier=self.noise_multiplier, rng=self._rng
        )
        spent = self.budget.spend(noise_multiplier=self.noise_multiplier, sample_rate=SAMPLE_RATE)
        return Aggregate(noisy, len(vectors), spent, self.budget.epsilon)

    def _current_round(self, model_id: int, round: int) -> int:
        from om_teach.sonar.contract import ContractRevert

        try:
            current = self.repository.current_round(model_id)
        except ContractRevert as error:
            raise CapsuleRefusal(f"model {model_id}: {error.reason}", 404) from error
        if round > current:
            raise CapsuleRefusal(
                f"round {round} of model {model_id} has not opened (the current round is "
                f"{current})",
                404,
            )
        return current

    def _round_submissions(self, model_id: int, round: int) -> tuple[list[str], list[str]]:
        cids = self.repository.gradient_cids(model_id, round)
        submitters = self.repository.submitters(model_id, round)
        # Both arrays grow together in each submission: their common prefix pairs CIDs with
        # submitters even if a submission landed between the two reads.
        count = min(len(cids), len(submitters))
        cids, submitters = list(cids[:count]), list(submitters[:count])
        distinct = len(set(submitters))
        if distinct < self.min_contributors:
            raise CapsuleRefusal(
                f"round {round} of model {model_id} has {distinct} distinct submitter(s), fewer "
                f"than the {self.min_contributors} the capsule requires to decrypt a sum",
                403,
            )
        if distinct < count:
            raise CapsuleRefusal(f"round {round} of model {model_id} repeats a submitter")
        if len(set(cids)) < count:
            duplicate = next(cid for cid in cids if cids.count(cid) > 1)
            raise CapsuleRefusal(
                f"CID {duplicate} is submitted more than once in round {round}: a copied "
                "ciphertext would isolate one mine's gradient"
            )
        for cid in cids:
            if cid in self._used_cids:
                used_model, used_round = self._used_cids[cid]
                raise CapsuleRefusal(
                    f"CID {cid} was already aggregated in round {used_round} of model "
                    f"{used_model}: a replayed ciphertext would isolate one mine's gradient"
                )
        return cids, submitters

    def _bundle_cid(self, model_id: int, round: int, current: int) -> str:
        """The model round ``round`` trains: the one the previous round produced, or the
        posted model for round 0 (the model's CID until a round is evaluated, then only in
        its ``ModelPosted`` event)."""
        if round > 0:
            return self.repository.round_result(model_id, round - 1).cid
        if current == 0:
            return self.repository.model_cid(model_id)
        posted = self.repository.events("ModelPosted", model_id=model_id)
        return posted[0].args["cid"]

    def _bundle(self, model_id: int, round: int, current: int) -> ModelBundle:
        cid = self._bundle_cid(model_id, round, current)
        what = f"the model bundle {cid} of round {round}"
        try:
            bundle = ModelBundle.from_bytes(self._fetch(cid, what))
        except (TypeError, ValueError) as error:
            raise CapsuleRefusal(f"{what} is not a valid model bundle: {error}") from error
        if bundle.public_key_n != self._public_key.n:
            raise CapsuleRefusal(
                f"{what} names a public key that is not the capsule's: its mines encrypt "
                "under another key, which the capsule cannot and will not decrypt"
            )
        if bundle.round != round:
            raise CapsuleRefusal(f"{what} says it is round {bundle.round}, not {round}")
        return bundle

    def _fetch(self, cid: str, what: str) -> bytes:
        from om_teach.storage import TamperedContentError

        try:
            return self.store.get(cid)
        except TamperedContentError as error:
            raise CapsuleRefusal(f"{what}: tampered content: {error}") from error
        except KeyError as error:
            raise CapsuleRefusal(f"{what}: CID {cid} is not in the store", 404) from error
        except ValueError as error:
            raise CapsuleRefusal(f"{what}: malformed CID {cid!r}: {error}") from error

    def _ciphertext(self, cid: str, submitter: str, bundle: ModelBundle) -> EncryptedVector:
        what = f"the gradient {cid} of {submitter}"
        data = _json_object(self._fetch(cid, what), what)
        try:
            vector = EncryptedVector.from_dict(data, public_key=self._public_key)
        except (TypeError, ValueError) as error:
            if "different public key" in str(error):
                raise CapsuleRefusal(
                    f"{what} is encrypted under another public key, not the capsule's"
                ) from error
            raise CapsuleRefusal(f"{what} is not a valid encrypted vector: {error}") from error
        expected = bundle.n_features + 1
        if vector.length != expected:
            raise CapsuleRefusal(
                f"{what} has {vector.length} values; the model needs {expected} (one per "
                "weight, and the bias)"
            )
        layout = vector.layout
        declared = (layout.precision, layout.max_abs, layout.max_summands)
        wanted = (bundle.precision, bundle.max_abs, bundle.max_summands)
        if declared != wanted:
            raise CapsuleRefusal(
                f"{what} has layout (precision, max_abs, max_summands) = {declared}, but the "
                f"model bundle says {wanted}"
            )
        if vector.count != 1:
            raise CapsuleRefusal(f"{what} claims to sum {vector.count} encryptions, not one")
        return vector


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CapsuleRefusal(f"{what} is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise CapsuleRefusal(f"{what} is not a JSON object")
    return value


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _Handler(BaseHTTPRequestHandler):
    """The capsule's routes; everything else is refused."""

    server: CapsuleServer

    def do_GET(self) -> None:
        capsule = self.server.capsule
        if self.path == "/public-key":
            self._reply(200, {"n": str(capsule.public_key.n)})
        elif self.path == "/status":
            self._reply(
                200,
                {
                    "min_contributors": capsule.min_contributors,
                    "noise_multiplier": capsule.noise_multiplier,
                    "epsilon_spent": _finite_or_none(capsule.epsilon_spent),
                    "epsilon_total": _finite_or_none(capsule.epsilon_total),
                    "decrypted_rounds": capsule.decrypted_rounds,
                },
            )
        else:
            self._reply(404, {"error": f"no route GET {self.path}: try /public-key or /status"})

    def do_POST(self) -> None:
        body = self._body()
        if body is None:
            return
        route = _AGGREGATE_ROUTE.fullmatch(self.path)
        if route is None or b"ciphertext" in body.lower():
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
        data = json.dumps(payload).encode()
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
    """The data scientist's side of the capsule: its public key and round aggregates.

    ``aggregate`` has the signature of the scientist's aggregators; the ε of the last release
    is kept in :attr:`last_epsilon_spent` and :attr:`last_epsilon_total` (infinite when the
    capsule's noise is off).
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

    def public_key(self) -> PaillierPublicKey:
        """The capsule's Paillier public key."""
        n = self._request("GET", "/public-key")["n"]
        return PaillierPublicKey(int(n))

    def status(self) -> dict[str, Any]:
        """The capsule's settings, ε spent and released rounds."""
        return self._request("GET", "/status")

    def aggregate(self, model_id: int, round: int) -> tuple[np.ndarray, int]:
        """The round's noisy gradient sum and how many gradients it sums; CapsuleRefusal if
        the capsule refuses."""
        reply = self._request("POST", f"/models/{int(model_id)}/rounds/{int(round)}/aggregate")
        spent, total = reply["epsilon_spent"], reply["epsilon_total"]
        self.last_epsilon_spent = math.inf if spent is None else float(spent)
        self.last_epsilon_total = math.inf if total is None else float(total)
        return np.asarray(reply["sum"], dtype=float), int(reply["contributors"])

    def _request(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        data = body if body is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read())["error"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {error.code} {error.reason}"
            raise CapsuleRefusal(message, error.code) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ConnectionError(f"no capsule answers at {self.url}: {reason}") from error


def main(argv: list[str] | None = None) -> None:
    """Run a capsule: connect to the chain and the store, make the key, serve until SIGTERM.

    Prints one JSON line ``{"url": ..., "pid": ...}`` on stdout once it is ready.
    """
    parser = argparse.ArgumentParser(
        prog="python -m om_teach.sonar.capsule",
        description="Sonar's capsule: the Paillier key holder that releases only noisy round sums.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--rpc-url", required=True, help="the chain's JSON-RPC URL")
    parser.add_argument("--contract", required=True, help="the ModelRepository's address")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", help="a directory store's folder")
    where.add_argument("--ipfs-api", help="an IPFS daemon's API multiaddr")
    parser.add_argument("--budget", type=float, default=10.0, help="epsilon at delta=1e-5")
    parser.add_argument("--noise-multiplier", type=float, default=1.0, help="0 turns noise off")
    parser.add_argument("--min-contributors", type=int, default=3)
    parser.add_argument("--key-bits", type=int, default=DEFAULT_KEY_BITS)
    args = parser.parse_args(argv)

    from om_teach.sonar.chain import Chain
    from om_teach.sonar.contract import ModelRepository
    from om_teach.storage import DirectoryStore, IpfsStore

    try:
        repository = ModelRepository.at(Chain.connect(args.rpc_url), args.contract)
        store = DirectoryStore(args.store) if args.store else IpfsStore(args.ipfs_api)
        capsule = Capsule(
            repository,
            store,
            key_bits=args.key_bits,
            min_contributors=args.min_contributors,
            noise_multiplier=args.noise_multiplier,
            budget=args.budget,
        )
        server = CapsuleServer(capsule, args.port)
    except (ConnectionError, ValueError, TypeError, OSError) as error:
        parser.exit(2, f"capsule: {error}\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(json.dumps({"url": server.url, "pid": os.getpid()}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
