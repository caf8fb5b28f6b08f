"""Shared by the node's tests: a node's data folder with tokens of each scope, and weights."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save as save_safetensors

from om_teach.fl.models import mlp
from om_teach.node.auth import issue

SCOPES = {
    "read": ["read"],
    "upload": ["upload"],
    "both": ["read", "upload"],
    "admin": ["admin"],
    "train": ["train"],
}


def prepare(data: Path, database_url: str | None = None) -> dict[str, str]:
    """A new node's data folder (and database) with one token per entry of SCOPES."""
    return {
        name: issue(data, scopes, name=name, database_url=database_url)
        for name, scopes in SCOPES.items()
    }


def weights(seed: int = 0) -> bytes:
    """A digits-mlp's weights as safetensors."""
    return save_safetensors(mlp(seed).state_dict())
