"""The node's state: tokens stored as hashes, migrations from the first schema, a database
that is behind or unreachable refused with a message, and two uvicorn workers sharing one real
PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from om_teach import cli
from om_teach.node import db
from om_teach.node.client import NodeClient
from om_teach.node.process import NodeProcess

from .node_helpers import prepare, weights


def test_token_create_prints_a_token_and_the_node_keeps_only_its_hash(tmp_path, capsys):
    assert cli.main(["node", "token", "create", "--data", str(tmp_path), "--scope", "read"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("omt_") and len(token) > 40
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("node.sqlite*"))
    assert token.encode() not in stored
    from hashlib import sha256

    engine = db.connect(db.database_url(tmp_path, None))
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT sha256, scopes FROM tokens")).all()
    assert rows == [(sha256(token.encode()).hexdigest(), "read")]


def test_a_database_made_by_the_first_migration_is_upgraded_with_its_data(tmp_path, capsys):
    engine = db.connect(db.database_url(tmp_path, None))
    assert db.upgrade(engine, "0001") == "0001"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO models (id, architecture, public, created) "
                "VALUES ('old', 'digits-mlp', 1, CURRENT_TIMESTAMP)"
            )
        )
    refused = subprocess.run(
        [sys.executable, "-m", "om_teach.cli", "node", "serve", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert f"schema revision 0001, this node needs {db.head()}" in refused.stderr
    assert "om-teach node migrate" in refused.stderr
    assert cli.main(["node", "migrate", "--data", str(tmp_path)]) == 0
    assert f"0001 -> {db.head()}" in capsys.readouterr().out
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, description FROM models")).all()
    assert rows == [("old", None)] and db.current(engine) == db.head()


def test_an_unreachable_database_is_named_without_its_password(tmp_path, capsys):
    url = "postgresql://node:secret-pw@127.0.0.1:1/nodes"
    assert cli.main(["node", "migrate", "--data", str(tmp_path), "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the database" in err and "127.0.0.1:1/nodes" in err
    assert "secret-pw" not in err


@pytest.fixture(scope="module")
def postgres():
    from om_teach.node.postgres import LocalPostgres, find_bin

    try:
        find_bin()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    with LocalPostgres() as server:
        yield server


def test_two_workers_on_one_postgresql_serve_the_same_state(postgres, tmp_path):
    tokens = prepare(tmp_path, postgres.url)
    with NodeProcess(tmp_path, database_url=postgres.url, workers=2) as node:
        c = NodeClient(node.url, tokens["both"])
        c.create_model("shared", "digits-mlp")

        def upload(seed: int) -> dict:
            with NodeClient(node.url, tokens["both"]) as own:
                return own.upload("shared", weights(seed))

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(upload, range(16)))
        versions = sorted(r["version"] for r in results)
        assert versions == list(range(1, 17))  # unique numbers across both workers
        listed = {v["version"]: v["cid"] for v in c.model("shared")["versions"]}
        assert listed == {r["version"]: r["cid"] for r in results}
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(
                pool.map(
                    lambda v: c.predict("shared", [[0.5] * 64], version=v)["cid"], range(1, 17)
                )
            )
        assert answers == [listed[v] for v in range(1, 17)]
    engine = db.connect(postgres.url)
    assert db.current(engine) == db.head()


def test_a_cycle_closes_once_with_two_workers_on_postgresql(postgres, tmp_path):
    """Fifty workers report at once to a cycle served by two uvicorn processes: every report
    is counted once, and exactly one version is published."""
    from om_teach.data.digits import load_digits
    from om_teach.fl.models import mlp
    from om_teach.node.auth import issue
    from om_teach.node.worker import train_one_cycle

    owner = issue(tmp_path, ["upload", "read"], database_url=postgres.url)
    workers = [issue(tmp_path, ["train", "read"], database_url=postgres.url) for _ in range(50)]
    digits = load_digits(0)
    with NodeProcess(tmp_path, database_url=postgres.url, workers=2) as node:
        scientist = NodeClient(node.url, owner)
        scientist.create_model("fl-pg", "digits-mlp")
        scientist.upload("fl-pg", mlp(0))
        server = {
            "cycles": 1,
            "min_workers": 1,
            "max_workers": 50,
            "min_reports": 50,
            "cycle_seconds": 120,
        }
        client = {"batch_size": 8, "learning_rate": 0.1, "local_steps": 2}
        pid = scientist.create_process("fl-pg", client, server)["id"]

        def work(i: int) -> dict:
            rows = slice(8 * i, 8 * i + 8)
            with NodeClient(node.url, workers[i]) as c:
                return train_one_cycle(c, pid, digits.X_train[rows], digits.y_train[rows], seed=i)

        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(work, range(50)))
        assert [a["status"] for a in answers] == ["counted"] * 50
        [cycle] = scientist.process(pid)["cycles"]
        assert (cycle["status"], cycle["published"]) == ("closed", 2)
        assert len(scientist.model("fl-pg")["versions"]) == 2


def test_secure_rounds_end_once_with_two_workers_on_postgresql(postgres, tmp_path):
    """Ten workers aggregate securely through two uvicorn processes on PostgreSQL, one of them
    silent during unmasking: each round ends once, and one version is published."""
    from om_teach.data.digits import load_digits
    from om_teach.fl.models import mlp
    from om_teach.node.auth import issue
    from om_teach.node.worker import train_one_secure_cycle

    owner = issue(tmp_path, ["upload", "read"], database_url=postgres.url)
    workers = [issue(tmp_path, ["train", "read"], database_url=postgres.url) for _ in range(10)]
    digits = load_digits(0)
    with NodeProcess(tmp_path, database_url=postgres.url, workers=2) as node:
        scientist = NodeClient(node.url, owner)
        scientist.create_model("sa-pg", "digits-mlp")
        scientist.upload("sa-pg", mlp(0))
        server = {
            "cycles": 1,
            "min_workers": 1,
            "max_workers": 10,
            "min_reports": 6,
            "cycle_seconds": 120,
            "round_seconds": 5,
            "secure_aggregation": True,
        }
        client = {"batch_size": 8, "learning_rate": 0.1, "local_steps": 2}
        pid = scientist.create_process("sa-pg", client, server)["id"]

        def work(i: int) -> dict:
            rows = slice(8 * i, 8 * i + 8)
            with NodeClient(node.url, workers[i]) as c:
                return train_one_secure_cycle(
                    c,
                    pid,
                    digits.X_train[rows],
                    digits.y_train[rows],
                    seed=i,
                    drop_after="masked" if i == 9 else None,
                )

        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(pool.map(work, range(10)))
        assert [a["status"] for a in answers] == ["closed"] * 9 + ["dropped"]
        [cycle] = scientist.process(pid)["cycles"]
        assert (cycle["status"], cycle["published"]) == ("closed", 2)
        assert len(scientist.model("sa-pg")["versions"]) == 2
