"""``om-teach node``: serve a node, migrate its database, issue tokens.

- ``serve --data DIR [--host 127.0.0.1] [--port 8700] [--database-url URL] [--workers N]``
- ``migrate --data DIR [--database-url URL]``: upgrade the database to this node's schema.
- ``token create --data DIR --scope read [--scope upload ...] [--name NAME]``: print a new
  token once; the node keeps only its hash.

Only :func:`add_commands` is imported with ``om-teach``; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``node serve|migrate|token`` to ``om-teach``'s commands."""
    node = commands.add_parser("node", help="run a model-hosting node: serve, migrate, token")
    sub = node.add_subparsers(dest="node_command", required=True)

    def with_state(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", required=True, help="the node's data folder")
        parser.add_argument("--database-url", help="postgresql://... (default: SQLite in --data)")

    serve = sub.add_parser("serve", help="serve the API and the status page with uvicorn")
    with_state(serve)
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1: put TLS in front")
    serve.add_argument("--port", type=int, default=8700)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--max-upload-mb", type=float, default=50.0)
    serve.add_argument("--max-batch", type=int, default=1024, help="rows per predict request")
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="upgrade the database to this node's schema")
    with_state(migrate)
    migrate.set_defaults(func=_migrate)

    token = sub.add_parser("token", help="issue access tokens").add_subparsers(
        dest="token_command", required=True
    )
    create = token.add_parser("create", help="print a new token with the given scopes")
    with_state(create)
    create.add_argument(
        "--scope", action="append", required=True, choices=("read", "upload", "train", "admin")
    )
    create.add_argument("--name", default="token", help="a label for the token")
    create.set_defaults(func=_token_create)


def _serve(args: argparse.Namespace) -> int:
    """Run uvicorn on the node app (a factory, so that each worker builds its own)."""
    import uvicorn

    from om_teach.node import db
    from om_teach.node.cycles import fail_interrupted

    engine = db.open_node(Path(args.data), args.database_url)
    db.check_current(engine)
    if failed := fail_interrupted(engine):
        print(f"{failed} secure-aggregation cycle(s) in flight failed: reason 'restart'")
    os.environ.update(
        OM_TEACH_NODE_DATA=str(Path(args.data).resolve()),
        OM_TEACH_NODE_DATABASE=args.database_url or "",
        OM_TEACH_NODE_MAX_UPLOAD=str(int(args.max_upload_mb * 1024 * 1024)),
        OM_TEACH_NODE_MAX_BATCH=str(args.max_batch),
    )
    print(f"om-teach node on http://{args.host}:{args.port} (data {args.data})", flush=True)
    uvicorn.run(
        "om_teach.node.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
    )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from om_teach.node import db

    engine = db.open_node(Path(args.data), args.database_url, migrate_new=False)
    before = db.current(engine)
    after = db.upgrade(engine)
    print(f"database schema: {before or 'empty'} -> {after}")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    from om_teach.node.auth import issue

    print(issue(Path(args.data), args.scope, name=args.name, database_url=args.database_url))
    print(
        f"scopes: {', '.join(sorted(set(args.scope)))}; shown once, keep it secret",
        file=sys.stderr,
    )
    return 0
