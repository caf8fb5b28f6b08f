"""Model-centric federated learning on the node, PyGrid's shape: a data scientist hosts a
process (a model, a client config, a server config); workers ask for a place in the current
cycle, train the cycle's committed version on their own data, and report their trained weights;
the cycle closes once, on enough reports or at its deadline, and FedAvg's result is published
as the model's next version, the commitment of the next cycle.

What each party learns: the node sees each report in the clear (secure aggregation over HTTP is
the next step); a worker sees the model versions. Whom each trusts: workers trust the node to
aggregate honestly; the node trusts no report: a request key is single-use and bound to one
cycle and worker, an update must fit the architecture and be finite, and its example count is
capped by what the client config allows (batch size × local steps), so a worker cannot buy
more weight than one honest worker has.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import secrets
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from om_teach.fl.strategy import FedAvg, Update
from om_teach.node import architectures
from om_teach.node.db import Assignment, Cycle, Process, Version
from om_teach.node.hosting import Hosting, NodeError


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _aware(moment: datetime.datetime) -> datetime.datetime:
    """SQLite hands back naive datetimes; every moment here is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


@dataclass(frozen=True)
class ClientConfig:
    """What each worker does with the cycle's model."""

    batch_size: int
    learning_rate: float
    local_steps: int

    @property
    def max_examples(self) -> int:
        """The most examples one report may claim: every step's batch."""
        return self.batch_size * self.local_steps


@dataclass(frozen=True)
class ServerConfig:
    """How the node runs the process: its cycles, the workers and reports each needs, and how
    long a cycle stays open."""

    cycles: int
    min_workers: int
    max_workers: int
    min_reports: int
    cycle_seconds: float
    secure_aggregation: bool = False


def _positive(config: dict, name: str, kind: type) -> int | float:
    value = config.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise NodeError(
            422,
            f"{name} must be a positive number, got {value!r}",
            "see the process configs in the node's README",
        )
    if kind is int and value != int(value):
        raise NodeError(422, f"{name} must be a whole number, got {value!r}", "use an int")
    return kind(value)


def parse_configs(client: dict, server: dict) -> tuple[ClientConfig, ServerConfig]:
    """Both configs, checked; 422 naming the first setting that cannot work."""
    if not isinstance(client, dict) or not isinstance(server, dict):
        raise NodeError(
            422,
            "client_config and server_config must be JSON objects",
            "see the process configs in the node's README",
        )
    client_config = ClientConfig(
        _positive(client, "batch_size", int),
        _positive(client, "learning_rate", float),
        _positive(client, "local_steps", int),
    )
    secure = server.get("secure_aggregation", False)
    server_config = ServerConfig(
        _positive(server, "cycles", int),
        _positive(server, "min_workers", int),
        _positive(server, "max_workers", int),
        _positive(server, "min_reports", int),
        _positive(server, "cycle_seconds", float),
        bool(secure),
    )
    if server_config.min_workers > server_config.max_workers:
        raise NodeError(
            422,
            f"min_workers ({server_config.min_workers}) exceeds max_workers "
            f"({server_config.max_workers})",
            "raise max_workers or lower min_workers",
        )
    if not server_config.min_workers <= server_config.min_reports <= server_config.max_workers:
        raise NodeError(
            422,
            f"min_reports ({server_config.min_reports}) must lie between "
            f"min_workers and max_workers",
            "a cycle closes on min_reports reports at its deadline, or at once on max_workers",
        )
    if secure:
        raise NodeError(
            422,
            "secure aggregation over HTTP is not available on this node yet",
            "set secure_aggregation to false",
        )
    return client_config, server_config


def _configs(process: Process) -> tuple[ClientConfig, ServerConfig]:
    return (
        ClientConfig(**json.loads(process.client_config)),
        ServerConfig(**json.loads(process.server_config)),
    )


def describe_process(session: Session, process: Process) -> dict:
    """A process as the API shows it: its configs and every cycle."""
    client, server = _configs(process)
    cycles = session.scalars(
        select(Cycle).where(Cycle.process_id == process.id).order_by(Cycle.number)
    )
    return {
        "id": process.id,
        "model": process.model_id,
        "client_config": client.__dict__,
        "server_config": server.__dict__,
        "cycles": [
            {
                "number": c.number,
                "version": c.version,
                "cid": c.cid,
                "status": c.status,
                "reason": c.reason,
                "published": c.published,
                "deadline": _aware(c.deadline).isoformat(),
            }
            for c in cycles
        ],
    }


class Cycles:
    """The node's FL processes, over its hosting (models, versions, the content store)."""

    def __init__(self, hosting: Hosting) -> None:
        self.hosting = hosting

    def create(self, session: Session, model_id: str, client: dict, server: dict) -> Process:
        """A process training ``model_id`` from its newest version; its first cycle opens."""
        client_config, server_config = parse_configs(client, server)
        self.hosting.model(session, model_id)
        version = self.hosting.version(session, model_id, None)
        process = Process(
            model_id=model_id,
            client_config=json.dumps(client_config.__dict__),
            server_config=json.dumps(server_config.__dict__),
        )
        session.add(process)
        session.flush()
        self._open(session, process, 1, version, server_config)
        session.commit()
        return process

    def _open(self, session, process, number, version: Version, server: ServerConfig) -> None:
        deadline = _now() + datetime.timedelta(seconds=server.cycle_seconds)
        session.add(
            Cycle(
                process_id=process.id,
                number=number,
                version=version.version,
                cid=version.cid,
                status="open",
                deadline=deadline,
            )
        )

    def process(self, session: Session, process_id: int) -> Process:
        process = session.get(Process, process_id)
        if process is None:
            raise NodeError(
                404, f"no FL process {process_id} on this node", "GET /fl/processes lists them"
            )
        return process

    def current(self, session: Session, process: Process) -> Cycle:
        """The process's newest cycle, closed first if its deadline has passed."""
        cycle = session.scalar(
            select(Cycle)
            .where(Cycle.process_id == process.id)
            .order_by(Cycle.number.desc())
            .limit(1)
        )
        if cycle.status == "open" and _aware(cycle.deadline) <= _now():
            self.close(session, cycle, at_deadline=True)
            session.expire_all()
            return self.current(session, process)
        return cycle

    def request(self, session: Session, process_id: int, worker: int) -> dict:
        """A place in the current cycle for ``worker``, or a rejection with a reason code."""
        process = self.process(session, process_id)
        cycle = self.current(session, process)
        client, server = _configs(process)
        if cycle.status != "open":
            return {"status": "rejected", "reason": "closed", "retry_after": None}
        wait = max(0.0, (_aware(cycle.deadline) - _now()).total_seconds())
        joined = session.scalar(
            select(Assignment).where(Assignment.cycle_id == cycle.id, Assignment.worker == worker)
        )
        if joined is not None:
            return {"status": "rejected", "reason": "cooldown", "retry_after": wait}
        taken = session.scalar(select(func.count()).where(Assignment.cycle_id == cycle.id))
        if taken >= server.max_workers:
            return {"status": "rejected", "reason": "capacity", "retry_after": wait}
        key = secrets.token_urlsafe(32)
        session.add(Assignment(cycle_id=cycle.id, worker=worker, key_sha256=_hash(key)))
        session.commit()
        return {
            "status": "accepted",
            "request_key": key,
            "cycle": cycle.number,
            "model": process.model_id,
            "version": cycle.version,
            "cid": cycle.cid,
            "client_config": client.__dict__,
            "deadline": _aware(cycle.deadline).isoformat(),
        }

    def report(self, session: Session, key: str, worker: int, data: bytes, examples: int) -> dict:
        """Count a worker's trained weights once, in the open cycle its key was issued for."""
        assignment = session.scalar(select(Assignment).where(Assignment.key_sha256 == _hash(key)))
        if assignment is None or assignment.worker != worker:
            raise NodeError(
                403,
                "this request key was not issued to this worker",
                "ask for a place with cycle-request first",
            )
        cycle = session.get(Cycle, assignment.cycle_id)
        process = session.get(Process, cycle.process_id)
        if cycle.status == "open" and _aware(cycle.deadline) <= _now():
            self.close(session, cycle, at_deadline=True)
            session.refresh(cycle)
        if cycle.status != "open":
            raise NodeError(
                409,
                f"cycle {cycle.number} is {cycle.status}: the report came late",
                "ask for a place in the current cycle",
            )
        if assignment.report_cid is not None:
            raise NodeError(
                409,
                "this request key has reported already",
                "each place in a cycle takes one report",
            )
        client, server = _configs(process)
        if (
            isinstance(examples, bool)
            or not isinstance(examples, int)
            or not (1 <= examples <= client.max_examples)
        ):
            raise NodeError(
                422,
                f"a report covers 1 to {client.max_examples} examples (batch "
                f"size × local steps), not {examples!r}",
                "report what you trained on",
            )
        architecture = architectures.get(self.hosting.model(session, process.model_id).architecture)
        try:
            architectures.check_weights(architecture, load_safetensors(bytes(data)))
        except (SafetensorError, ValueError, RuntimeError) as err:
            raise NodeError(
                422,
                f"the report does not fit {architecture.name}: {err}",
                "report the trained weights as safetensors",
            ) from None
        cid = self.hosting.store.put(bytes(data))
        claimed = session.execute(
            update(Assignment)
            .where(Assignment.id == assignment.id, Assignment.report_cid.is_(None))
            .values(report_cid=cid, examples=examples)
        ).rowcount
        if claimed != 1:
            session.rollback()
            raise NodeError(
                409,
                "this request key has reported already",
                "each place in a cycle takes one report",
            )
        session.commit()
        reports = session.scalar(
            select(func.count()).where(
                Assignment.cycle_id == cycle.id, Assignment.report_cid.is_not(None)
            )
        )
        if reports >= server.max_workers:
            self.close(session, cycle, at_deadline=False)
        return {"status": "counted", "cycle": cycle.number, "cid": cid}

    def close(self, session: Session, cycle: Cycle, *, at_deadline: bool) -> None:
        """Close ``cycle`` exactly once (whichever request claims it first, in any process):
        publish FedAvg of its reports and open the next cycle, or fail it for too few."""
        claimed = session.execute(
            update(Cycle)
            .where(Cycle.id == cycle.id, Cycle.status == "open")
            .values(status="closing")
        ).rowcount
        if claimed != 1:
            session.rollback()
            return
        process = session.get(Process, cycle.process_id)
        _, server = _configs(process)
        reports = list(
            session.scalars(
                select(Assignment).where(
                    Assignment.cycle_id == cycle.id, Assignment.report_cid.is_not(None)
                )
            )
        )
        base = session.scalar(
            select(Version).where(
                Version.model_id == process.model_id, Version.version == cycle.version
            )
        )
        if len(reports) < server.min_reports:
            session.execute(
                update(Cycle)
                .where(Cycle.id == cycle.id)
                .values(
                    status="failed",
                    reason=f"{len(reports)} reports, fewer than {server.min_reports}",
                )
            )
            self._open(session, process, cycle.number + 1, base, server)
            session.commit()
            return
        published = self._aggregate(session, process, base, reports)
        session.execute(
            update(Cycle)
            .where(Cycle.id == cycle.id)
            .values(status="closed", published=published.version)
        )
        if cycle.number < server.cycles:
            self._open(session, process, cycle.number + 1, published, server)
        session.commit()

    def _aggregate(self, session, process: Process, base: Version, reports) -> Version:
        """FedAvg of the reports from the base version, stored and added as the next version."""
        names = list(load_safetensors(self.hosting.weights(base)))
        current = [load_safetensors(self.hosting.weights(base))[n].numpy() for n in names]
        updates = []
        for report in reports:
            tensors = load_safetensors(self.hosting.store.get(report.report_cid))
            updates.append(Update([tensors[n].numpy() for n in names], report.examples))
        averaged = FedAvg().aggregate(0, current, updates)
        data = save_safetensors(
            {
                n: torch.as_tensor(np.asarray(a, dtype=np.float32))
                for n, a in zip(names, averaged, strict=True)
            }
        )
        cid = self.hosting.store.put(data)
        latest = (
            session.scalar(
                select(func.max(Version.version)).where(Version.model_id == process.model_id)
            )
            or 0
        )
        version = Version(model_id=process.model_id, version=latest + 1, cid=cid, size=len(data))
        session.add(version)
        session.flush()
        return version


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
