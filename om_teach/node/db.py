"""The node's state in SQL: tokens (hashes only), models and their versions, FL processes,
their cycles and workers, and the messages of secure aggregation.

SQLite in the data folder is the embedded default, in WAL mode with full synchronous commits, so
that whatever the node acknowledged survives a kill; ``postgresql://`` URLs run the same node on
PostgreSQL (through psycopg 3). The schema is Alembic's (``migrations/``): :func:`upgrade`
brings a database to the head revision, and :func:`check_current` refuses one that is behind.
"""

from __future__ import annotations

import datetime
import functools
from pathlib import Path

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    pass


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Token(Base):
    """An access token: its SHA-256 (never the token), its scopes, comma-separated."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(100))
    created: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Model(Base):
    """A hosted model: its id, architecture, and whether anyone may read it without a token."""

    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    architecture: Mapped[str] = mapped_column(String(64))
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Version(Base):
    """Version n of a model: its weights, named by their content address."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        UniqueConstraint("model_id", "cid", name="uq_model_versions_model_id_cid"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    cid: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    created: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Process(Base):
    """A model-centric FL process: the model it trains and its two configs (JSON)."""

    __tablename__ = "fl_processes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    client_config: Mapped[str] = mapped_column(Text)
    server_config: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Cycle(Base):
    """Cycle n of a process: the version (and its CID, the commitment) its workers train, its
    deadline, and its status: open, closed (a version was published) or failed (with a reason)."""

    __tablename__ = "fl_cycles"
    __table_args__ = (UniqueConstraint("process_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    process_id: Mapped[int] = mapped_column(ForeignKey("fl_processes.id"))
    number: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    cid: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="open")
    reason: Mapped[str | None] = mapped_column(String(100), nullable=True)
    deadline: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    published: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # With secure aggregation: the protocol's round (keys, shares, masked, unmask), the round's
    # deadline, and the workers each round's messages came from (JSON: U1, U2, U3).
    stage: Mapped[str | None] = mapped_column(String(16), nullable=True)
    stage_deadline: Mapped[datetime.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    members: Mapped[str | None] = mapped_column(Text, nullable=True)


class Assignment(Base):
    """A worker accepted into a cycle: the hash of its request key, and its report once made."""

    __tablename__ = "fl_assignments"
    __table_args__ = (UniqueConstraint("cycle_id", "worker"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cycle_id: Mapped[int] = mapped_column(ForeignKey("fl_cycles.id"))
    worker: Mapped[int] = mapped_column(ForeignKey("tokens.id"))
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    report_cid: Mapped[str | None] = mapped_column(String(100), nullable=True)
    examples: Mapped[int | None] = mapped_column(Integer, nullable=True)


class SecAggMessage(Base):
    """One secure-aggregation message of a cycle: from a worker (``keys``, ``shares``,
    ``masked``, ``unmask``, ``abort``) or, where ``assignment_id`` is the receiver, the node's
    relay to it (``inbox``). Masked vectors are raw little-endian ring elements; the rest JSON."""

    __tablename__ = "fl_secagg_messages"
    __table_args__ = (UniqueConstraint("cycle_id", "assignment_id", "kind"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cycle_id: Mapped[int] = mapped_column(ForeignKey("fl_cycles.id"))
    assignment_id: Mapped[int] = mapped_column(ForeignKey("fl_assignments.id"))
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class DatabaseError(ValueError):
    """A database that cannot be reached, or whose schema is not this node's."""


def database_url(data: Path, url: str | None) -> str:
    """``url``, or the embedded default: SQLite in the data folder."""
    return url or f"sqlite:///{Path(data).resolve() / 'node.sqlite'}"


def connect(url: str) -> Engine:
    """An engine for ``url`` (postgresql:// is served by psycopg 3), checked by connecting once;
    DatabaseError naming the database (never its password) when it cannot be reached."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    options = (
        {"connect_args": {"connect_timeout": 5}} if parsed.drivername.startswith("postgres") else {}
    )
    # One connection for each thread of the server's threadpool (anyio's default: 40).
    engine = create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=30, **options)
    if parsed.drivername.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as err:
        shown = parsed.render_as_string(hide_password=True)
        raise DatabaseError(f"cannot reach the database {shown}: {err.orig}") from None
    return engine


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _alembic_config(engine: Engine):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


@functools.cache
def head() -> str:
    """The newest schema revision this node knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current(engine: Engine) -> str | None:
    """The database's schema revision; None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Migrate the database to ``revision``; returns the revision it is at."""
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)
    return current(engine)


def check_current(engine: Engine) -> None:
    """DatabaseError unless the database is at :func:`head`."""
    at, want = current(engine), head()
    if at != want:
        raise DatabaseError(
            f"the database is at schema revision {at}, this node needs {want}: "
            "back it up, then run `om-teach node migrate`"
        )


def open_node(data: Path, url: str | None = None, *, migrate_new: bool = True) -> Engine:
    """The engine of the node whose data folder is ``data`` (made if missing); an empty
    database is migrated to the head when ``migrate_new`` (a new node), else left as it is."""
    Path(data).mkdir(parents=True, exist_ok=True)
    engine = connect(database_url(Path(data), url))
    if migrate_new and current(engine) is None:
        upgrade(engine)
    return engine
