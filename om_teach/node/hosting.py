"""What the node does with models, apart from HTTP: create them, add versions from safetensors
uploads, serve their weights and run predictions.

Weights are parsed by ``safetensors`` alone, which reads tensors and never code: a pickle, a
``torch.save`` zip or a ``torch.export`` archive is refused as "not safetensors" before anything
could run it. A version is acknowledged only after its blob is in the content store (written
whole, then renamed) and its row is committed; a kill before that leaves no version behind.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from torch import nn

from om_teach.node import architectures
from om_teach.node.db import Model, Version
from om_teach.storage.stores import ContentStore

MODEL_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class NodeError(Exception):
    """A refusal the client can act on: an HTTP status, what went wrong, and what to do."""

    def __init__(self, status: int, error: str, hint: str, **extra: object) -> None:
        super().__init__(error)
        self.status, self.error, self.hint, self.extra = status, error, hint, extra


@dataclass(frozen=True)
class Limits:
    """The largest upload, in bytes, and the most rows one predict request may carry."""

    upload_bytes: int = 50 * 1024 * 1024
    batch_rows: int = 1024


def describe(model: Model, versions: list[Version]) -> dict:
    """A model as the API lists it."""
    return {
        "id": model.id,
        "architecture": model.architecture,
        "public": model.public,
        "description": model.description,
        "versions": [{"version": v.version, "cid": v.cid, "size": v.size} for v in versions],
    }


class Hosting:
    """Models and versions over one database session factory and one content store."""

    def __init__(self, store: ContentStore, limits: Limits | None = None) -> None:
        self.store, self.limits = store, limits or Limits()
        self._networks: OrderedDict[str, nn.Module] = OrderedDict()
        self._models: dict[str, Model] = {}
        self._lock = threading.Lock()

    def create_model(
        self,
        session: Session,
        model_id: str,
        architecture: str,
        *,
        public: bool,
        description: str | None = None,
    ) -> tuple[Model, bool]:
        """The model ``model_id``, created unless it exists with the same architecture (so a
        retried request is harmless); 409 if it exists with another."""
        if not isinstance(model_id, str) or not MODEL_ID.fullmatch(model_id):
            raise NodeError(
                422,
                f"bad model id {model_id!r}",
                "use 1-64 characters: lowercase letters, digits, - and _",
            )
        if description is not None and (len(description) > 2000 or "\x00" in description):
            raise NodeError(
                422,
                "a description is at most 2000 characters, without NUL",
                "shorten the description",
            )
        try:
            architectures.get(architecture)
        except architectures.ArchitectureError as err:
            raise NodeError(
                422, str(err), "name one of the architectures GET /architectures lists"
            ) from None
        existing = session.get(Model, model_id)
        if existing is not None:
            if existing.architecture != architecture:
                raise NodeError(
                    409,
                    f"model {model_id!r} exists with architecture {existing.architecture!r}",
                    "choose another id",
                )
            return existing, False
        model = Model(
            id=model_id, architecture=architecture, public=bool(public), description=description
        )
        session.add(model)
        try:
            session.commit()
        except IntegrityError:  # created by a concurrent request
            session.rollback()
            return self.create_model(session, model_id, architecture, public=public)
        return model, True

    def model(self, session: Session, model_id: str) -> Model:
        """The model ``model_id``; 404 naming it otherwise. A model never changes once made,
        so each process keeps the ones it has read."""
        model = self._models.get(model_id)
        if model is None:
            if not MODEL_ID.fullmatch(model_id):
                raise NodeError(
                    404, f"no model {model_id!r} on this node", "GET /models lists them"
                )
            model = session.get(Model, model_id)
            if model is None:
                raise NodeError(
                    404, f"no model {model_id!r} on this node", "GET /models lists them"
                )
            session.expunge(model)
            self._models[model_id] = model
        return model

    def versions(self, session: Session, model_id: str) -> list[Version]:
        """The model's versions, oldest first."""
        query = select(Version).where(Version.model_id == model_id).order_by(Version.version)
        return list(session.scalars(query))

    def version(self, session: Session, model_id: str, version: int | None) -> Version:
        """Version ``version`` of the model (the newest for None); 404 otherwise."""
        query = select(Version).where(Version.model_id == model_id)
        if version is None:
            query = query.order_by(Version.version.desc()).limit(1)
        else:
            query = query.where(Version.version == version)
        row = session.scalar(query)
        if row is not None:
            return row
        latest = session.scalar(
            select(func.max(Version.version)).where(Version.model_id == model_id)
        )
        if latest is None:
            raise NodeError(
                404,
                f"model {model_id!r} has no versions yet",
                "upload weights to POST /models/{id}/versions",
            )
        raise NodeError(
            404, f"model {model_id!r} has no version {version}", f"its versions are 1 to {latest}"
        )

    def add_version(self, session: Session, model_id: str, data: bytes) -> tuple[Version, bool]:
        """A new version holding the safetensors ``data`` (or the existing one with the same
        content address: a retried upload is harmless). Nothing is stored unless the weights
        fit the model's architecture."""
        model = self.model(session, model_id)
        architecture = architectures.get(model.architecture)
        if len(data) > self.limits.upload_bytes:
            raise NodeError(
                413,
                f"the upload has {len(data)} bytes, over this node's limit of "
                f"{self.limits.upload_bytes}",
                "upload smaller weights",
            )
        try:
            tensors = load_safetensors(bytes(data))
        except (SafetensorError, ValueError, RuntimeError) as err:
            raise NodeError(
                422,
                f"the upload is not a safetensors file ({err})",
                "save the weights with safetensors.torch.save_file or save(); "
                "pickles and torch.save files are never accepted",
            ) from None
        try:
            network = architectures.check_weights(architecture, tensors)
        except architectures.ArchitectureError as err:
            raise NodeError(422, str(err), f"upload the weights of a {architecture.name}") from None
        cid = self.store.put(bytes(data))
        self._remember(cid, network)
        for _ in range(5):
            existing = session.scalar(
                select(Version).where(Version.model_id == model_id, Version.cid == cid)
            )
            if existing is not None:
                return existing, False
            latest = session.scalar(
                select(func.max(Version.version)).where(Version.model_id == model_id)
            )
            row = Version(model_id=model_id, version=(latest or 0) + 1, cid=cid, size=len(data))
            session.add(row)
            try:
                session.commit()
                return row, True
            except IntegrityError:  # a concurrent upload took that number: try the next
                session.rollback()
        raise NodeError(503, "too many concurrent uploads to this model", "retry in a moment")

    def weights(self, version: Version) -> bytes:
        """The version's safetensors bytes, checked against its content address."""
        try:
            return self.store.get(version.cid)
        except KeyError:
            raise NodeError(
                500,
                f"the weights of version {version.version} of "
                f"{version.model_id!r} ({version.cid}) are missing from the store",
                "the node's operator restores the data folder from a backup",
            ) from None

    def network(self, model: Model, version: Version) -> nn.Module:
        """The version's network, loaded once and kept (by content address)."""
        with self._lock:
            if version.cid in self._networks:
                self._networks.move_to_end(version.cid)
                return self._networks[version.cid]
        tensors = load_safetensors(self.weights(version))
        network = architectures.check_weights(architectures.get(model.architecture), tensors)
        self._remember(version.cid, network)
        return network

    def _remember(self, cid: str, network: nn.Module) -> None:
        with self._lock:
            self._networks[cid] = network
            while len(self._networks) > 32:
                self._networks.popitem(last=False)

    def predict(self, model: Model, version: Version, inputs: object) -> list[list[float]]:
        """The network's outputs for ``inputs``, a list of rows of numbers."""
        architecture = architectures.get(model.architecture)
        width = architecture.input_features
        try:
            rows = np.asarray(inputs)
        except ValueError:
            rows = np.asarray([], dtype=object)
        if rows.dtype.kind not in "iuf" or rows.ndim != 2 or rows.shape[1] != width:
            raise NodeError(
                422,
                f"inputs must be a list of rows of {width} numbers for "
                f"{architecture.name}; got shape {rows.shape}, dtype {rows.dtype}",
                '{"inputs": [[...], ...]}, each row as long as the model\'s input',
            )
        if not 1 <= len(rows) <= self.limits.batch_rows:
            raise NodeError(
                413 if len(rows) else 422,
                f"a request carries 1 to {self.limits.batch_rows} rows, got {len(rows)}",
                "split the batch",
            )
        if not np.all(np.isfinite(rows)) or np.abs(rows).max() > np.finfo(np.float32).max:
            raise NodeError(
                422,
                "inputs hold NaN, infinite or out-of-range values",
                "send finite numbers within float32's range",
            )
        network = self.network(model, version)
        with torch.no_grad():
            outputs = network(torch.as_tensor(rows, dtype=torch.float32))
        return outputs.tolist()
