"""The node's Python client: the whole API, retries with backoff for what is transient (a node
restarting, a dropped connection, 502/503/504), and a :class:`NodeRequestError` carrying the
node's own "what went wrong" and "what to do" for everything else.

Downloads are verified: the bytes must hash to the content address the node lists for that
version, or to one the caller got elsewhere (``expected_cid``). The first catches damage and a
meddler that changes only the bytes; only the second, a CID published where the node cannot
change it, holds against a dishonest node or a meddler on plain HTTP that changes both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from om_teach.node import PROTOCOL, PROTOCOL_HEADER, architectures
from om_teach.storage.cid import cid_of

TRANSIENT = {502, 503, 504}


def _q(model_id: str) -> str:
    """A model id as one URL path segment."""
    return quote(model_id, safe="")


class NodeRequestError(RuntimeError):
    """The node refused a request: its status, error and hint."""

    def __init__(self, status: int, error: str, hint: str = "") -> None:
        super().__init__(f"{status}: {error}" + (f" ({hint})" if hint else ""))
        self.status, self.error, self.hint = status, error, hint


class DownloadMismatch(RuntimeError):
    """Downloaded weights that do not hash to the content address the node listed."""


class NodeClient:
    """A client of the node at ``url``, with a bearer ``token`` (None for public models);
    ``transport`` goes to httpx (a proxy's, say)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        retries: int = 4,
        backoff: float = 0.2,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {PROTOCOL_HEADER: PROTOCOL}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url, self.retries, self.backoff = url.rstrip("/"), retries, backoff
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                if attempt == self.retries:
                    raise ConnectionError(f"the node at {self.url} did not answer: {err}") from None
            else:
                if response.status_code not in TRANSIENT or attempt == self.retries:
                    break
            time.sleep(self.backoff * 2**attempt)
        if response.status_code >= 400:
            try:
                body = response.json()
                error, hint = body.get("error", response.text), body.get("hint", "")
            except ValueError:
                error, hint = response.text or response.reason_phrase, ""
            raise NodeRequestError(response.status_code, error, hint)
        return response

    def protocol(self) -> dict:
        """The node's protocol version and database schema revision."""
        return self._request("GET", "/protocol").json()

    def architectures(self) -> list[dict]:
        """The architectures the node hosts."""
        return self._request("GET", "/architectures").json()

    def models(self) -> list[dict]:
        """The models this client may read, with their versions."""
        return self._request("GET", "/models").json()

    def model(self, model_id: str) -> dict:
        """One model and its versions."""
        return self._request("GET", f"/models/{_q(model_id)}").json()

    def create_model(
        self,
        model_id: str,
        architecture: str,
        *,
        public: bool = False,
        description: str | None = None,
    ) -> dict:
        """Create a model (or find the same one already there); needs the upload scope."""
        body = {
            "id": model_id,
            "architecture": architecture,
            "public": public,
            "description": description,
        }
        return self._request("POST", "/models", json=body).json()

    def upload(self, model_id: str, weights: bytes | nn.Module | dict[str, torch.Tensor]) -> dict:
        """Host new weights as the model's next version: safetensors bytes, a network, or its
        state dict. Returns the version and its content address."""
        if isinstance(weights, nn.Module):
            weights = weights.state_dict()
        if isinstance(weights, dict):
            weights = save_safetensors({k: v.contiguous() for k, v in weights.items()})
        return self._request(
            "POST",
            f"/models/{_q(model_id)}/versions",
            content=weights,
            headers={"Content-Type": "application/octet-stream"},
        ).json()

    def download(self, model_id: str, version: int, *, expected_cid: str | None = None) -> bytes:
        """A version's safetensors bytes, verified against ``expected_cid`` if given, else the
        content address the node lists."""
        listed = {v["version"]: v["cid"] for v in self.model(model_id)["versions"]}
        if version not in listed:
            raise NodeRequestError(404, f"model {model_id!r} has no version {version}")
        want = expected_cid or listed[version]
        data = self._request("GET", f"/models/{_q(model_id)}/versions/{version}/weights").content
        actual = cid_of(data)
        if actual != want:
            source = "expected" if expected_cid else "listed"
            raise DownloadMismatch(
                f"version {version} of {model_id!r} is {source} as {want}, but the bytes "
                f"received hash to {actual}: do not use them"
            )
        return data

    def load(self, model_id: str, version: int, *, expected_cid: str | None = None) -> nn.Module:
        """A version as a network of its architecture, from verified weights."""
        architecture = architectures.get(self.model(model_id)["architecture"])
        return architectures.check_weights(
            architecture,
            load_safetensors(self.download(model_id, version, expected_cid=expected_cid)),
        )

    def predict(
        self, model_id: str, inputs: Sequence[Sequence[float]], *, version: int | None = None
    ) -> dict:
        """The model's outputs for rows of ``inputs`` (the newest version unless given)."""
        rows = inputs.tolist() if hasattr(inputs, "tolist") else inputs
        body = {"inputs": rows, "version": version}
        return self._request("POST", f"/models/{_q(model_id)}/predict", json=body).json()

    def create_process(self, model_id: str, client_config: dict, server_config: dict) -> dict:
        """Host an FL process training ``model_id``; needs the upload scope."""
        body = {
            "model_id": model_id,
            "client_config": client_config,
            "server_config": server_config,
        }
        return self._request("POST", "/fl/processes", json=body).json()

    def process(self, process_id: int) -> dict:
        """An FL process and its cycles."""
        return self._request("GET", f"/fl/processes/{process_id}").json()

    def cycle_request(self, process_id: int) -> dict:
        """Ask for a place in the process's current cycle: accepted (with a request key, the
        version to train and its CID) or rejected (with a reason and retry_after)."""
        return self._request("POST", f"/fl/processes/{process_id}/cycle-request").json()

    def report(self, request_key: str, weights: nn.Module | dict, examples: int) -> dict:
        """Report trained weights for the place ``request_key`` holds."""
        if isinstance(weights, nn.Module):
            weights = weights.state_dict()
        data = save_safetensors({k: v.contiguous() for k, v in weights.items()})
        headers = {"Content-Type": "application/octet-stream", "X-Request-Key": request_key}
        return self._request(
            "POST", "/fl/reports", params={"examples": examples}, content=data, headers=headers
        ).json()

    def secagg_send(self, request_key: str, round: str, message: dict | bytes) -> dict:
        """Send this place's message of a secure-aggregation round (``keys``, ``shares``,
        ``masked`` as raw bytes, ``unmask``) or an ``abort`` with its reason."""
        headers = {"X-Request-Key": request_key}
        if isinstance(message, bytes):
            headers["Content-Type"] = "application/octet-stream"
            return self._request(
                "POST", f"/fl/secagg/{round}", content=message, headers=headers
            ).json()
        return self._request("POST", f"/fl/secagg/{round}", json=message, headers=headers).json()

    def secagg_state(self, request_key: str, want: str | None = None) -> dict:
        """Where this place's secure cycle stands, with what the node relays for the next round
        (only ``want`` of roster, inbox and request, when given)."""
        params = {} if want is None else {"want": want}
        return self._request(
            "GET", "/fl/secagg/state", params=params, headers={"X-Request-Key": request_key}
        ).json()
