"""Shared by the node's tests: a node's data folder with tokens of each scope, and weights."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors
from sqlalchemy.orm import Session

from om_teach.fl.models import mlp
from om_teach.node import db
from om_teach.node.auth import create_token

SCOPES = {
    "read": ["read"],
    "upload": ["upload"],
    "both": ["read", "upload"],
    "admin": ["admin"],
    "train": ["train"],
}


def prepare(data: Path, database_url: str | None = None) -> dict[str, str]:
    """Migrate the node's database and issue one token per entry of SCOPES."""
    data.mkdir(parents=True, exist_ok=True)
    engine = db.connect(db.database_url(data, database_url))
    db.upgrade(engine)
    with Session(engine) as session:
        tokens = {name: create_token(session, name, scopes) for name, scopes in SCOPES.items()}
    engine.dispose()
    return tokens


def weights(seed: int = 0) -> bytes:
    """A digits-mlp's weights as safetensors."""
    return save_safetensors(mlp(seed).state_dict())


def as_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in model.state_dict().items()}
