"""Scoped bearer tokens. The node stores only each token's SHA-256: a stolen database names no
token. A token is 32 random bytes, so one unsalted hash is enough (nothing to guess)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from om_teach.node.db import Token, check_current, open_node

SCOPES = ("read", "upload", "train", "admin")
PREFIX = "omt_"


def digest(token: str) -> str:
    """The SHA-256 (hex) under which a token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str, scopes: Iterable[str]) -> str:
    """A new token with ``scopes``; the caller shows it once, the node keeps its hash."""
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}, got {scopes}")
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(Token(name=name, sha256=digest(token), scopes=",".join(scopes)))
    session.commit()
    return token


def identity_of(session: Session, token: str) -> tuple[int, set[str]] | None:
    """The token's id and scopes, None for a token the node never issued. admin holds them all."""
    row = session.scalar(select(Token).where(Token.sha256 == digest(token)))
    if row is None:
        return None
    scopes = set(row.scopes.split(","))
    return row.id, set(SCOPES) if "admin" in scopes else scopes


def issue(
    data: Path, scopes: Iterable[str], *, name: str = "token", database_url: str | None = None
) -> str:
    """A new token for the node with data folder ``data``: what ``om-teach node token create``
    prints. The database must be at the head revision (a new one is created there)."""
    engine = open_node(data, database_url)
    try:
        check_current(engine)
        with Session(engine) as session:
            return create_token(session, name, scopes)
    finally:
        engine.dispose()
