"""Model-centric federated learning on the node, PyGrid's shape: a data scientist hosts a
process (a model, a client config, a server config); workers ask for a place in the current
cycle, train the cycle's committed version on their own data, and report their trained weights;
the cycle closes once, on enough reports or at its deadline, and FedAvg's result is published
as the model's next version, the commitment of the next cycle.

What each party learns: in a plain cycle the node sees each report in the clear; with
``secure_aggregation`` on it sees only their sum (:mod:`om_teach.node.secagg`, which states that
protocol's trust). A worker sees the model versions. Whom each trusts: in a plain cycle workers
trust the node to aggregate honestly; the node trusts no report: a request key is single-use
and bound to one cycle and worker, an update must fit the architecture and be finite, and its
example count is capped by what the client config allows (batch size × local steps), so a
worker cannot buy more weight than one honest worker has.
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
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from om_teach.fl.secure import decode_sum
from om_teach.fl.strategy import FedAvg, Update, flatten, unflatten
from om_teach.node import architectures, secagg
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
    round_seconds: float | None = None  # each secure round after the keys; cycle_seconds if None

    @property
    def secure_round_seconds(self) -> float:
        return self.round_seconds or self.cycle_seconds


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
        None if server.get("round_seconds") is None else _positive(server, "round_seconds", float),
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
    if secure and server_config.min_reports < 2:
        raise NodeError(
            422,
            "secure aggregation needs min_reports of at least 2 (its threshold t)",
            "raise min_reports: the sum of one worker is that worker's update",
        )
    if secure and server_config.max_workers * client_config.max_examples >= 2**secagg.BITS:
        raise NodeError(
            422,
            f"max_workers × batch_size × local_steps must stay under 2^{secagg.BITS}, "
            "the ring the example counts are summed in",
            "lower max_workers or the client config",
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
                "round": c.stage,
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
        self.secure = secagg.SecureRounds(self)

    @staticmethod
    def configs(process: Process) -> tuple[ClientConfig, ServerConfig]:
        return _configs(process)

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
        _open(session, process, 1, version, server_config)
        session.commit()
        return process

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
        if cycle.status == "open" and cycle.stage is not None:
            self.secure.advance(session, cycle)
            session.expire_all()
            if session.get(Cycle, cycle.id).status != "open":
                return self.current(session, process)
        elif cycle.status == "open" and _aware(cycle.deadline) <= _now():
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
        wait = max(0.0, (_aware(cycle.stage_deadline or cycle.deadline) - _now()).total_seconds())
        if cycle.stage not in (None, "keys"):
            return {"status": "rejected", "reason": "closed", "retry_after": wait}
        joined = session.scalar(
            select(Assignment).where(Assignment.cycle_id == cycle.id, Assignment.worker == worker)
        )
        if joined is not None:
            return {"status": "rejected", "reason": "cooldown", "retry_after": wait}
        taken = session.scalar(select(func.count()).where(Assignment.cycle_id == cycle.id))
        if taken >= server.max_workers:
            return {"status": "rejected", "reason": "capacity", "retry_after": wait}
        key = secrets.token_urlsafe(32)
        assignment = Assignment(cycle_id=cycle.id, worker=worker, key_sha256=_hash(key))
        session.add(assignment)
        session.commit()
        place = {
            "status": "accepted",
            "request_key": key,
            "process": process.id,
            "cycle": cycle.number,
            "model": process.model_id,
            "version": cycle.version,
            "cid": cycle.cid,
            "client_config": client.__dict__,
            "deadline": _aware(cycle.deadline).isoformat(),
        }
        if server.secure_aggregation:
            place["secure_aggregation"] = secagg.settings(
                assignment, server.min_reports, server.max_workers, client.max_examples
            )
        return place

    def place(self, session: Session, key: str, worker: int) -> tuple[Assignment, Cycle, Process]:
        """The place ``key`` holds, if it was issued to ``worker``; 403 otherwise."""
        assignment = session.scalar(select(Assignment).where(Assignment.key_sha256 == _hash(key)))
        if assignment is None or assignment.worker != worker:
            raise NodeError(
                403,
                "this request key was not issued to this worker",
                "ask for a place with cycle-request first",
            )
        cycle = session.get(Cycle, assignment.cycle_id)
        return assignment, cycle, session.get(Process, cycle.process_id)

    def report(self, session: Session, key: str, worker: int, data: bytes, examples: int) -> dict:
        """Count a worker's trained weights once, in the open cycle its key was issued for."""
        assignment, cycle, process = self.place(session, key, worker)
        if cycle.stage is not None:
            raise NodeError(
                409,
                f"cycle {cycle.number} aggregates securely: the node takes no weights in the clear",
                "take part through /fl/secagg (om_teach.node.worker.train_one_secure_cycle)",
            )
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
        base = _version(session, process, cycle.version)
        if len(reports) < server.min_reports:
            fail_cycle(session, cycle, f"{len(reports)} reports, fewer than {server.min_reports}")
            session.commit()
            return
        names, current = self._base(session, process, base)
        updates = []
        for report in reports:
            tensors = load_safetensors(self.hosting.store.get(report.report_cid))
            updates.append(Update([tensors[n].numpy() for n in names], report.examples))
        self._publish(session, cycle, names, FedAvg().aggregate(0, current, updates))
        session.commit()

    def fail(self, session: Session, cycle: Cycle, reason: str) -> None:
        fail_cycle(session, cycle, reason)

    def vector_length(self, session: Session, process: Process) -> int:
        """The length of a worker's secure-aggregation input: every parameter, and its count."""
        architecture = self.hosting.model(session, process.model_id).architecture
        built = architectures.get(architecture).build()
        return sum(t.numel() for t in built.state_dict().values()) + 1

    def publish_sum(self, session: Session, cycle: Cycle, total: np.ndarray, count: int) -> None:
        """Step the cycle's version by the unmasked sum of ``count`` workers' weighted changes
        (:func:`om_teach.fl.secure.decode_sum`), publish it, and open the next cycle."""
        process = session.get(Process, cycle.process_id)
        client, server = _configs(process)
        base = _version(session, process, cycle.version)
        names, current = self._base(session, process, base)
        step = decode_sum(
            total,
            count,
            max_examples=client.max_examples,
            clipping_range=secagg.CLIPPING_RANGE,
            target_range=secagg.target_range(server.max_workers),
            bits=secagg.BITS,
        )
        self._publish(session, cycle, names, unflatten(flatten(current) + step, current))

    def _base(self, session, process: Process, base: Version) -> tuple[list[str], list]:
        """The base version's tensor names, in the architecture's order, and its arrays."""
        architecture = self.hosting.model(session, process.model_id).architecture
        names = list(architectures.get(architecture).build().state_dict())
        tensors = load_safetensors(self.hosting.weights(base))
        return names, [tensors[n].numpy() for n in names]

    def _publish(self, session: Session, cycle: Cycle, names: list[str], params) -> None:
        """Store ``params`` as the model's next version, close ``cycle`` on it, open the next."""
        process = session.get(Process, cycle.process_id)
        _, server = _configs(process)
        published = self._store_version(session, process, names, params)
        session.execute(
            update(Cycle)
            .where(Cycle.id == cycle.id)
            .values(status="closed", published=published.version)
        )
        if cycle.number < server.cycles:
            _open(session, process, cycle.number + 1, published, server)

    def _store_version(self, session, process: Process, names: list[str], averaged) -> Version:
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


def _version(session: Session, process: Process, number: int) -> Version:
    return session.scalar(
        select(Version).where(Version.model_id == process.model_id, Version.version == number)
    )


def _open(session, process: Process, number: int, version: Version, server: ServerConfig) -> None:
    """Cycle ``number`` of ``process``, training ``version``, open from now."""
    deadline = _now() + datetime.timedelta(seconds=server.cycle_seconds)
    session.add(
        Cycle(
            process_id=process.id,
            number=number,
            version=version.version,
            cid=version.cid,
            status="open",
            deadline=deadline,
            stage="keys" if server.secure_aggregation else None,
        )
    )


def fail_cycle(session: Session, cycle: Cycle, reason: str) -> None:
    """Fail ``cycle`` with ``reason`` and open the next on the same version (not committed)."""
    process = session.get(Process, cycle.process_id)
    _, server = _configs(process)
    session.execute(
        update(Cycle).where(Cycle.id == cycle.id).values(status="failed", reason=reason[:100])
    )
    _open(session, process, cycle.number + 1, _version(session, process, cycle.version), server)


def fail_interrupted(engine: Engine) -> int:
    """Fail every secure cycle a stopped node left open, with reason ``restart`` (see
    :mod:`om_teach.node.secagg`); returns how many."""
    with Session(engine) as session:
        interrupted = list(
            session.scalars(select(Cycle).where(Cycle.status == "open", Cycle.stage.is_not(None)))
        )
        for cycle in interrupted:
            fail_cycle(session, cycle, "restart")
        session.commit()
    return len(interrupted)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
