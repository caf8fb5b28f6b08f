"""Secure aggregation over HTTP: the four rounds of :mod:`om_teach.crypto.secagg` (advertise
keys, share keys, masked input, unmask), with the node as the server that relays every message.
A cycle's workers each send their FedAvg change weighted and quantized
(:func:`om_teach.fl.secure.encode_change`); the node unmasks only the sum, steps the model by
it and publishes the next version.

The node keeps no protocol state in memory: each round's messages are rows, and a round ends
(exactly once, whichever request or uvicorn worker sees it first) when every worker still in the
protocol has answered or sent ``abort``, or at the round's deadline. It then freezes who
answered (U1, U2, U3), so a message that comes later is refused as late, and relays what the
next round needs.

What each party learns
    The node: each worker's public keys, share ciphertexts it cannot open, masked vectors that
    are uniform to it, and the sum of the survivors' weighted changes and example counts, from
    which it publishes the next version. A worker: the roster's public keys, its own shares, the
    list of survivors and dropouts, and the published version. Dropouts after the shares round
    are recovered as long as t = min_reports workers answer each later round.

The commitment that stops model inconsistency
    The cycle's model is committed by content address (its CID) when the cycle opens, and
    listed by ``GET /fl/processes/{id}``. Every worker checks the weights it downloads against
    the CID of its place, and binds that CID, the process and the cycle into every pairwise mask
    and share ciphertext (secagg's ``context``). A node that gives one worker a different model
    (Pasquini et al., CCS 2022) gives it a different context: no one else can open its shares,
    it opens no one's, and its change is never summed with theirs.

Whom each trusts
    Workers trust the node to follow the protocol as an honest-but-curious server, with up to
    t − 1 colluding workers (as :mod:`om_teach.crypto.secagg`). Trust that remains: a node that
    makes up workers of its own (tokens are its to issue) can fill a cycle with them and shrink
    the honest sum, down to one real worker's change beside t − 1 made-up ones whose inputs it
    knows. Only an identity the node cannot mint (a quorum of real people, an attested device)
    removes that; this node does not have one.

A restart fails every secure cycle in flight with reason ``restart``: the workers' secrets live
in their processes, and the node cannot tell which of them are still there to finish it; its
workers are told on their next poll, and the next cycle starts with fresh keys.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from om_teach.crypto.secagg import (
    FIELD_BYTES,
    ID_BYTES,
    KEY_BYTES,
    NONCE_BYTES,
    AdvertisedKeys,
    EncryptedShares,
    MaskedInput,
    SecAggError,
    Server,
    UnmaskResponse,
)
from om_teach.crypto.sharing import PRIME, ShamirShare
from om_teach.node.db import Assignment, Cycle, Process, SecAggMessage
from om_teach.node.hosting import NodeError

BITS = 32
CLIPPING_RANGE = 1.0
STAGES = ("keys", "shares", "masked", "unmask")
"""The protocol's rounds as the node names them; a worker sends one message in each."""
SHARE_BYTES = NONCE_BYTES + 2 * ID_BYTES + 2 * FIELD_BYTES + 16  # nonce, header, shares, tag
REASON_CHARS = 300


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _aware(moment: datetime.datetime) -> datetime.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def target_range(max_workers: int) -> int:
    """The finest quantization whose sum over ``max_workers`` still fits Z_2^32 (at most 2^24)."""
    return min(1 << 24, 1 << (((1 << BITS) - 1) // max_workers).bit_length() - 1)


def context(process_id: int, cycle: int, cid: str) -> bytes:
    """What every mask and share of a cycle is bound to: the process, the cycle and the CID of
    the model the worker checked and trained."""
    return f"om-teach node process {process_id} cycle {cycle} model {cid}".encode()


def settings(assignment: Assignment, threshold: int, max_workers: int, max_examples: int) -> dict:
    """What a worker needs to take part, sent with its place."""
    return {
        "client_id": assignment.id,
        "threshold": threshold,
        "bits": BITS,
        "clipping_range": CLIPPING_RANGE,
        "target_range": target_range(max_workers),
        "max_examples": max_examples,
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object, what: str, length: int | None = None) -> bytes:
    try:
        data = base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{what} is not base64") from None
    if length is not None and len(data) != length:
        raise _bad(f"{what} is {len(data)} bytes, not {length}")
    return data


def _bad(error: str) -> NodeError:
    return NodeError(422, error, "send the message that secure aggregation's client makes")


class SecureRounds:
    """The secure-aggregation rounds of the node's secure cycles (``cycles`` is the node's
    :class:`~om_teach.node.cycles.Cycles`, which publishes the result)."""

    def __init__(self, cycles) -> None:
        self.cycles = cycles

    # -- what workers call ----------------------------------------------------------------

    def submit(self, session: Session, key: str, worker: int, kind: str, body: bytes) -> dict:
        """Take one worker's message of round ``kind`` (or ``abort``), once."""
        assignment, cycle, _ = self.cycles.place(session, key, worker)
        self.advance(session, cycle)
        session.refresh(cycle)
        if cycle.status != "open":
            raise NodeError(
                409,
                f"cycle {cycle.number} is {cycle.status}"
                + (f" ({cycle.reason})" if cycle.reason else ""),
                "ask for a place in the current cycle",
            )
        if kind != "abort" and kind != cycle.stage:
            raise NodeError(
                409,
                f"secure aggregation is at round {cycle.stage!r}, not {kind!r}",
                "poll GET /fl/secagg/state and send what it asks for",
            )
        allowed = self._expected(session, cycle, cycle.stage)
        if assignment.id not in allowed:
            raise NodeError(
                403,
                f"this worker is not in round {cycle.stage!r} of cycle {cycle.number}: it did "
                "not answer an earlier round in time",
                "ask for a place in the next cycle",
            )
        payload = self._checked(session, cycle, assignment, kind, body)
        locked = session.execute(  # the round cannot end between this check and the insert
            update(Cycle)
            .where(Cycle.id == cycle.id, Cycle.status == "open", Cycle.stage == cycle.stage)
            .values(stage=cycle.stage)
        ).rowcount
        if locked != 1:
            session.rollback()
            raise NodeError(409, "the round ended before this message came", "poll the state")
        session.add(
            SecAggMessage(
                cycle_id=cycle.id, assignment_id=assignment.id, kind=kind, payload=payload
            )
        )
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise NodeError(
                409, f"this worker has sent its {kind} message already", "send each one once"
            ) from None
        self.advance(session, cycle)
        return {"status": "received", "cycle": cycle.number, "round": kind}

    def state(self, session: Session, key: str, worker: int, want: str | None = None) -> dict:
        """Where the worker's cycle stands, and what the node relays to it for the next round
        (only ``want`` of roster, inbox and request, when given)."""
        assignment, cycle, _ = self.cycles.place(session, key, worker)
        if cycle.status == "open" and self._deadline(cycle) <= _now():
            self.advance(session, cycle)  # a complete round ends on its last message
            session.refresh(cycle)
        members = json.loads(cycle.members or "{}")
        out = {
            "cycle": cycle.number,
            "status": cycle.status,
            "round": cycle.stage,
            "reason": cycle.reason,
            "published": cycle.published,
        }
        me = assignment.id
        for stage in STAGES:
            if stage in members and me not in members[stage]:
                out["left_out_of"] = stage  # it did not answer that round in time, or aborted
                break
        if me in members.get("keys", ()) and want in (None, "roster"):
            keys = self._messages(session, cycle, "keys", members["keys"])
            out["roster"] = [{"client_id": a, **json.loads(keys[a])} for a in members["keys"]]
        if me in members.get("shares", ()) and want in (None, "inbox"):
            inbox = self._messages(session, cycle, "inbox", [me])
            out["inbox"] = json.loads(inbox[me]) if me in inbox else []
        if me in members.get("masked", ()) and want in (None, "request"):
            dropped = [a for a in members["shares"] if a not in members["masked"]]
            out["request"] = {"survivors": members["masked"], "dropped": dropped}
        return out

    # -- how rounds end -------------------------------------------------------------------

    def advance(self, session: Session, cycle: Cycle) -> None:
        """End the cycle's current round, and any after it, that are complete or past their
        deadline."""
        while True:
            session.refresh(cycle)
            if cycle.status != "open" or not self._complete(session, cycle):
                return
            self._end_round(session, cycle)

    def _expected(self, session: Session, cycle: Cycle, stage: str) -> list[int]:
        """Who may answer round ``stage``: every place while keys are advertised, then the
        workers that answered the round before."""
        members = json.loads(cycle.members or "{}")
        at = STAGES.index(stage)
        if at == 0:
            return list(
                session.scalars(select(Assignment.id).where(Assignment.cycle_id == cycle.id))
            )
        return members[STAGES[at - 1]]

    def _deadline(self, cycle: Cycle) -> datetime.datetime:
        return _aware(cycle.stage_deadline or cycle.deadline)

    def _complete(self, session: Session, cycle: Cycle) -> bool:
        if self._deadline(cycle) <= _now():
            return True
        answered = session.scalar(
            select(func.count(func.distinct(SecAggMessage.assignment_id))).where(
                SecAggMessage.cycle_id == cycle.id,
                SecAggMessage.kind.in_((cycle.stage, "abort")),
            )
        )
        if cycle.stage == "keys":
            _, server = self.cycles.configs(session.get(Process, cycle.process_id))
            return answered >= server.max_workers
        return answered >= len(self._expected(session, cycle, cycle.stage))

    def _end_round(self, session: Session, cycle: Cycle) -> None:
        stage = cycle.stage
        at = STAGES.index(stage)
        following = STAGES[at + 1] if at + 1 < len(STAGES) else "done"
        claimed = session.execute(
            update(Cycle)
            .where(Cycle.id == cycle.id, Cycle.status == "open", Cycle.stage == stage)
            .values(stage=following)
        ).rowcount
        if claimed != 1:
            session.rollback()
            return
        process = session.get(Process, cycle.process_id)
        _, server = self.cycles.configs(process)
        expected = set(self._expected(session, cycle, stage))
        aborted = self._messages(session, cycle, "abort", None)
        answers = {
            a: p
            for a, p in self._messages(session, cycle, stage, None).items()
            if a in expected and a not in aborted
        }
        members = json.loads(cycle.members or "{}")
        members[stage] = sorted(answers)
        threshold = server.min_reports
        if len(answers) < threshold:
            why = f"{len(answers)} workers answered round {stage}, fewer than t={threshold}"
            if aborted:
                why += f"; {len(aborted)} aborted"
            self.cycles.fail(session, cycle, why[:100])
            session.commit()
            return
        values = {
            "members": json.dumps(members),
            "stage_deadline": _now() + datetime.timedelta(seconds=server.secure_round_seconds),
        }
        session.execute(update(Cycle).where(Cycle.id == cycle.id).values(**values))
        if stage == "shares":
            self._relay_shares(session, cycle, answers)
        if stage == "unmask":
            try:
                total = self._unmask(session, cycle, members, answers)
            except SecAggError as err:
                self.cycles.fail(session, cycle, f"unmasking failed: {err}"[:100])
                session.commit()
                return
            self.cycles.publish_sum(session, cycle, total, len(members["masked"]))
        session.commit()

    def _relay_shares(self, session: Session, cycle: Cycle, answers: dict[int, bytes]) -> None:
        """Each U2 worker's inbox: the ciphertexts the other U2 workers sent it."""
        inboxes: dict[int, list[dict]] = {a: [] for a in answers}
        for sender, payload in answers.items():
            for share in json.loads(payload)["shares"]:
                if share["receiver"] in inboxes:
                    inboxes[share["receiver"]].append({"sender": sender, **share})
        for receiver, inbox in inboxes.items():
            session.add(
                SecAggMessage(
                    cycle_id=cycle.id,
                    assignment_id=receiver,
                    kind="inbox",
                    payload=json.dumps(inbox).encode(),
                )
            )

    def _unmask(self, session, cycle: Cycle, members: dict, answers: dict) -> np.ndarray:
        """The survivors' sum, by secagg's server replaying the rounds from the stored rows."""
        process = session.get(Process, cycle.process_id)
        length = self.cycles.vector_length(session, process)
        server = Server(
            threshold=self.cycles.configs(process)[1].min_reports,
            vector_length=length,
            bits=BITS,
            round_id=cycle.number,
            context=context(process.id, cycle.number, cycle.cid),
        )
        keys = self._messages(session, cycle, "keys", members["keys"])
        server.advertise_keys(
            [
                AdvertisedKeys(
                    a,
                    base64.b64decode(json.loads(keys[a])["c_pk"]),
                    base64.b64decode(json.loads(keys[a])["s_pk"]),
                )
                for a in members["keys"]
            ]
        )
        shares = self._messages(session, cycle, "shares", members["shares"])
        server.share_keys(
            [
                [
                    EncryptedShares(a, s["receiver"], base64.b64decode(s["ciphertext"]))
                    for s in json.loads(shares[a])["shares"]
                ]
                for a in members["shares"]
            ]
        )
        masked = self._messages(session, cycle, "masked", members["masked"])
        server.masked_input(
            [
                MaskedInput(a, np.frombuffer(masked[a], dtype="<u4").astype(np.uint32), BITS)
                for a in members["masked"]
            ]
        )
        points = {a: i + 1 for i, a in enumerate(members["keys"])}
        responses = []
        for a, payload in answers.items():
            body = json.loads(payload)
            responses.append(
                UnmaskResponse(
                    a,
                    {int(v): ShamirShare(points[a], (int(y),)) for v, y in body["b"].items()},
                    {int(v): ShamirShare(points[a], (int(y),)) for v, y in body["sk"].items()},
                )
            )
        return server.unmask(responses)

    # -- checking what workers send -------------------------------------------------------

    def _checked(self, session, cycle: Cycle, assignment: Assignment, kind: str, body: bytes):
        """The message as stored, after checking its form; 422 naming what is wrong."""
        if kind == "masked":
            length = self.cycles.vector_length(session, session.get(Process, cycle.process_id))
            if len(body) != 4 * length:
                raise _bad(
                    f"a masked input is {length} elements of Z_2^{BITS}, {4 * length} bytes "
                    f"little-endian; got {len(body)} bytes"
                )
            return bytes(body)
        try:
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _bad(f"the {kind} message is not JSON") from None
        if not isinstance(message, dict):
            raise _bad(f"the {kind} message must be a JSON object")
        members = json.loads(cycle.members or "{}")
        if kind == "abort":
            reason = message.get("reason")
            if not isinstance(reason, str) or not 0 < len(reason) <= REASON_CHARS:
                raise _bad(f"an abort carries a reason of 1 to {REASON_CHARS} characters")
            return json.dumps({"reason": reason, "round": cycle.stage}).encode()
        if kind == "keys":
            c_pk = _unb64(message.get("c_pk"), "c_pk", KEY_BYTES)
            s_pk = _unb64(message.get("s_pk"), "s_pk", KEY_BYTES)
            advertised = self._messages(session, cycle, "keys", None)
            if assignment.id in advertised:
                raise NodeError(
                    409, "this worker has sent its keys message already", "send each one once"
                )
            for payload in advertised.values():
                other = json.loads(payload)
                if {b64(c_pk), b64(s_pk)} & {other["c_pk"], other["s_pk"]}:
                    raise NodeError(
                        409,
                        "another worker advertised these public keys",
                        "make fresh keys: each worker advertises its own",
                    )
            return json.dumps({"c_pk": b64(c_pk), "s_pk": b64(s_pk)}).encode()
        if kind == "shares":
            shares = message.get("shares")
            others = set(members["keys"]) - {assignment.id}
            if not isinstance(shares, list) or not all(isinstance(s, dict) for s in shares):
                raise _bad("shares must be a list of {receiver, ciphertext}")
            receivers = [s.get("receiver") for s in shares]
            if not all(type(r) is int for r in receivers) or sorted(receivers) != sorted(others):
                raise _bad(
                    f"shares go to each other worker of the roster once: {sorted(others)}, "
                    f"got {receivers}"
                )
            clean = [
                {
                    "receiver": s["receiver"],
                    "ciphertext": b64(
                        _unb64(s.get("ciphertext"), f"the share for {s['receiver']}", SHARE_BYTES)
                    ),
                }
                for s in shares
            ]
            return json.dumps({"shares": clean}).encode()
        # unmask: a b-share of every survivor, an s_sk-share of every dropout, nothing else
        survivors = members["masked"]
        dropped = [a for a in members["shares"] if a not in survivors]
        out = {}
        for field, owners in (("b", survivors), ("sk", dropped)):
            given = message.get(field)
            if not isinstance(given, dict) or sorted(given) != sorted(str(a) for a in owners):
                raise _bad(f"{field} must hold one share for each of {owners}")
            values = {}
            for owner, y in given.items():
                try:
                    value = int(y)
                except (TypeError, ValueError):
                    raise _bad(f"the {field}-share of {owner} is not an integer") from None
                if not 0 <= value < PRIME:
                    raise _bad(f"the {field}-share of {owner} lies outside the field")
                values[owner] = str(value)
            out[field] = values
        return json.dumps(out).encode()

    def _messages(
        self, session: Session, cycle: Cycle, kind: str, among: list[int] | None
    ) -> dict[int, bytes]:
        query = select(SecAggMessage.assignment_id, SecAggMessage.payload).where(
            SecAggMessage.cycle_id == cycle.id, SecAggMessage.kind == kind
        )
        if among is not None:
            query = query.where(SecAggMessage.assignment_id.in_(among))
        return {a: bytes(p) for a, p in session.execute(query)}


def node_view(engine, process_id: int, cycle_number: int) -> dict:
    """Everything the node holds of one secure cycle's inputs, for showing what it saw: each
    worker's masked vector (ring elements), who survived and who dropped, and the version it
    published from their sum."""
    with Session(engine) as session:
        cycle = session.scalar(
            select(Cycle).where(Cycle.process_id == process_id, Cycle.number == cycle_number)
        )
        if cycle is None:
            raise ValueError(f"process {process_id} has no cycle {cycle_number}")
        members = json.loads(cycle.members or "{}")
        rows = session.execute(
            select(SecAggMessage.assignment_id, SecAggMessage.payload).where(
                SecAggMessage.cycle_id == cycle.id, SecAggMessage.kind == "masked"
            )
        )
        masked = {a: np.frombuffer(p, dtype="<u4").copy() for a, p in rows}
        return {
            "masked": masked,
            "keys": members.get("keys", []),
            "survivors": members.get("masked", []),
            "dropped": [a for a in members.get("shares", []) if a not in members.get("masked", [])],
            "status": cycle.status,
            "published": cycle.published,
        }
