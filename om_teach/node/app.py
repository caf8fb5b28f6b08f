"""The node's HTTP API (FastAPI). Every refusal is JSON, ``{"error": ..., "hint": ...}``: 401
without a token, 403 for a token without the scope, 404, 409, 413 for too large, 422 for bad
input, 426 for a client whose protocol the node does not speak.

State comes from the data folder (the content store of weights, and the SQLite database unless
``database_url`` names another); :func:`app_from_env` builds the app for ``uvicorn --factory``.
"""

import os
from importlib import resources
from pathlib import Path
from typing import Annotated

import torch
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as FastApiPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from om_teach.node import PROTOCOL, PROTOCOL_HEADER, architectures, db
from om_teach.node.auth import digest, identity_of
from om_teach.node.cycles import Cycles, describe_process
from om_teach.node.hosting import Hosting, Limits, NodeError, describe
from om_teach.storage.stores import DirectoryStore, TamperedContentError

MAX_VERSION = 2**31 - 1  # versions are SQL integers
JSON_BODY_BYTES = 4 * 1024 * 1024  # a JSON request: a model's description, a predict batch


class NewModel(BaseModel):
    id: str
    architecture: str
    public: bool = False
    description: str | None = None


class NewProcess(BaseModel):
    model_id: str
    client_config: dict
    server_config: dict


class PredictRequest(BaseModel):
    inputs: list
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)


class BodyLimit:
    """Refuse a request body past its limit (413): weights uploads up to ``upload_bytes``, any
    other request up to JSON_BODY_BYTES; by its Content-Length, else as the bytes arrive."""

    def __init__(self, app, *, upload_bytes: int) -> None:
        self.app, self.upload_bytes = app, upload_bytes

    def _refusal(self, limit: int) -> NodeError:
        return NodeError(
            413,
            f"the request is larger than this node accepts ({limit} bytes)",
            "upload smaller weights, or split a predict batch",
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["method"] == "POST" and scope["path"].endswith(("/versions", "/fl/reports"))
        limit = self.upload_bytes if upload else JSON_BODY_BYTES
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            err = self._refusal(limit)
            response = JSONResponse({"error": err.error, "hint": err.hint}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise self._refusal(limit)
            return message

        await self.app(scope, counted, send)


def create_app(
    data: Path, database_url: str | None = None, limits: Limits | None = None
) -> FastAPI:
    """The node over the data folder ``data``; the database must be at the head revision."""
    data = Path(data)
    engine = db.connect(db.database_url(data, database_url))
    db.check_current(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    hosting = Hosting(DirectoryStore(data / "blobs"), limits)
    cycles = Cycles(hosting)
    torch.set_num_threads(1)  # requests run in parallel threads; one row needs no more

    async def protocol_spoken(request: Request) -> None:
        asked = request.headers.get(PROTOCOL_HEADER)
        if asked is not None and asked != PROTOCOL:
            raise NodeError(
                426,
                f"this node speaks protocol {PROTOCOL}, the client protocol {asked}",
                f"use a client for protocol {PROTOCOL}",
                reason="version",
                node_protocol=PROTOCOL,
                client_protocol=asked,
            )

    app = FastAPI(
        title="om-teach node",
        version=PROTOCOL,
        dependencies=[Depends(protocol_spoken)],
    )
    app.add_middleware(BodyLimit, upload_bytes=hosting.limits.upload_bytes)
    app.state.hosting, app.state.engine = hosting, engine

    @app.exception_handler(NodeError)
    def _refusal(request: Request, err: NodeError) -> JSONResponse:
        return JSONResponse(
            {"error": err.error, "hint": err.hint, **err.extra}, status_code=err.status
        )

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        hints = {
            404: "GET /docs lists the API's routes",
            405: "GET /docs lists each route's methods",
            413: "send a smaller request",
        }
        return JSONResponse(
            {"error": str(err.detail), "hint": hints.get(err.status_code, "see GET /docs")},
            status_code=err.status_code,
        )

    @app.exception_handler(Exception)
    def _unexpected(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse(
            {
                "error": f"the node failed: {type(err).__name__}",
                "hint": "the node's operator finds the details in its log",
            },
            status_code=500,
        )

    @app.exception_handler(TamperedContentError)
    def _damaged(request: Request, err: TamperedContentError) -> JSONResponse:
        return JSONResponse(
            {
                "error": f"the node's stored weights are damaged: {err}",
                "hint": "the node's operator restores the data folder from a backup",
            },
            status_code=500,
        )

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        return JSONResponse(
            {"error": f"bad request: {problems}", "hint": "see the API's schema at /docs"},
            status_code=422,
        )

    def session():
        with sessions() as s:
            yield s

    Db = Annotated[Session, Depends(session)]
    issued: dict[str, tuple[int, set[str]]] = {}  # token hash -> (id, scopes), seen valid

    def lookup(token: str) -> tuple[int, set[str]] | None:
        with sessions() as s:
            return identity_of(s, token)

    async def identity(request: Request) -> tuple[int, set[str]] | None:
        """The caller's token id and scopes; None without a token; 401 for a token the node
        never issued."""
        header = request.headers.get("authorization")
        if header is None:
            return None
        kind, _, token = header.partition(" ")
        key = digest(token.strip())
        found = issued.get(key) if kind.lower() == "bearer" else None
        if found is None and kind.lower() == "bearer":
            found = await run_in_threadpool(lookup, token.strip())
            if found is not None:  # tokens are never revoked yet: a hit stays valid
                issued[key] = found
        if found is None:
            raise NodeError(
                401,
                "the token is not one this node issued",
                "send 'Authorization: Bearer <token>' with a token from "
                "`om-teach node token create`",
            )
        return found

    Identity = Annotated[tuple[int, set[str]] | None, Depends(identity)]

    async def scopes(caller: Identity) -> set[str] | None:
        """The caller's scopes; None without a token."""
        return None if caller is None else caller[1]

    Scopes = Annotated[set[str] | None, Depends(scopes)]

    def need(granted: set[str] | None, scope: str) -> None:
        if granted is None:
            raise NodeError(
                401,
                f"this needs a token with the {scope!r} scope",
                "send 'Authorization: Bearer <token>'",
            )
        if scope not in granted:
            raise NodeError(
                403,
                f"the token's scopes {sorted(granted)} do not include {scope!r}",
                f"ask the node's admin for a token with the {scope!r} scope",
            )

    def readable(s: Session, model_id: str, granted: set[str] | None):
        model = hosting.model(s, model_id)
        if not model.public:
            need(granted, "read")
        return model

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def status_page() -> str:
        return resources.files("om_teach.node").joinpath("static/index.html").read_text()

    @app.get("/protocol")
    def protocol() -> dict:
        return {"protocol": PROTOCOL, "schema": db.head()}

    @app.get("/architectures")
    def list_architectures() -> list[dict]:
        return [
            {
                "name": a.name,
                "description": a.description,
                "input_features": a.input_features,
                "output_features": a.output_features,
            }
            for a in architectures.REGISTRY.values()
        ]

    @app.get("/models")
    def list_models(s: Db, granted: Scopes) -> list[dict]:
        query = select(db.Model).order_by(db.Model.id)
        if granted is None or "read" not in granted:
            query = query.where(db.Model.public.is_(True))
        return [describe(m, hosting.versions(s, m.id)) for m in s.scalars(query)]

    @app.post("/models", status_code=201)
    def create_model(body: NewModel, s: Db, granted: Scopes, response: Response) -> dict:
        need(granted, "upload")
        model, created = hosting.create_model(
            s, body.id, body.architecture, public=body.public, description=body.description
        )
        response.status_code = 201 if created else 200
        return describe(model, hosting.versions(s, model.id))

    @app.get("/models/{model_id}")
    def get_model(model_id: str, s: Db, granted: Scopes) -> dict:
        return describe(readable(s, model_id, granted), hosting.versions(s, model_id))

    @app.post("/models/{model_id}/versions", status_code=201)
    async def upload(model_id: str, request: Request, granted: Scopes, response: Response) -> dict:
        need(granted, "upload")
        body = await request.body()  # BodyLimit refuses more than the upload limit
        version, created = await run_in_threadpool(store_version, model_id, bytes(body))
        response.status_code = 201 if created else 200
        return {
            "model": model_id,
            "version": version.version,
            "cid": version.cid,
            "size": version.size,
        }

    def store_version(model_id: str, data: bytes):
        with sessions() as s:
            return hosting.add_version(s, model_id, data)

    @app.get("/models/{model_id}/versions/{version}/weights")
    def download(
        model_id: str,
        version: Annotated[int, FastApiPath(ge=1, le=MAX_VERSION)],
        s: Db,
        granted: Scopes,
    ) -> Response:
        readable(s, model_id, granted)
        row = hosting.version(s, model_id, version)
        return Response(
            hosting.weights(row),
            media_type="application/octet-stream",
            headers={"X-Content-CID": row.cid, "ETag": f'"{row.cid}"'},
        )

    @app.post("/models/{model_id}/predict")
    async def predict(model_id: str, body: PredictRequest, granted: Scopes) -> dict:
        return await run_in_threadpool(run_prediction, model_id, body, granted)

    def run_prediction(model_id: str, body: PredictRequest, granted: set[str] | None) -> dict:
        with sessions() as s:
            model = readable(s, model_id, granted)
            row = hosting.version(s, model_id, body.version)
        outputs = hosting.predict(model, row, body.inputs)
        return {"model": model_id, "version": row.version, "cid": row.cid, "outputs": outputs}

    @app.post("/fl/processes", status_code=201)
    def create_process(body: NewProcess, s: Db, granted: Scopes) -> dict:
        need(granted, "upload")
        process = cycles.create(s, body.model_id, body.client_config, body.server_config)
        return describe_process(s, process)

    @app.get("/fl/processes/{process_id}")
    def get_process(process_id: int, s: Db, granted: Scopes) -> dict:
        process = cycles.process(s, process_id)
        readable(s, process.model_id, granted)
        cycles.current(s, process)
        return describe_process(s, process)

    def worker(caller: tuple[int, set[str]] | None) -> int:
        """The caller's token id, if it may train; 401/403 with reason "auth" otherwise."""
        if caller is None or "train" not in caller[1]:
            status = 401 if caller is None else 403
            raise NodeError(
                status,
                "joining a cycle needs a token with the 'train' scope",
                "ask the node's admin for a train token",
                reason="auth",
                retry_after=None,
            )
        return caller[0]

    @app.post("/fl/processes/{process_id}/cycle-request")
    def cycle_request(process_id: int, s: Db, caller: Identity) -> dict:
        return cycles.request(s, process_id, worker(caller))

    @app.post("/fl/reports")
    async def report(request: Request, caller: Identity, examples: int) -> dict:
        who = worker(caller)
        key = request.headers.get("x-request-key")
        if not key:
            raise NodeError(
                422,
                "a report needs its X-Request-Key header",
                "send the request key that cycle-request gave you",
            )
        body = await request.body()

        def count() -> dict:
            with sessions() as s:
                return cycles.report(s, key, who, body, examples)

        return await run_in_threadpool(count)

    def request_key(request: Request) -> str:
        key = request.headers.get("x-request-key")
        if not key:
            raise NodeError(
                422,
                "secure aggregation's messages need the X-Request-Key header",
                "send the request key that cycle-request gave you",
            )
        return key

    @app.get("/fl/secagg/state")
    def secagg_state(
        request: Request,
        caller: Identity,
        want: Annotated[str | None, Query(pattern="^(roster|inbox|request)$")] = None,
    ) -> dict:
        who, key = worker(caller), request_key(request)
        with sessions() as s:
            return cycles.secure.state(s, key, who, want)

    @app.post("/fl/secagg/{round}")
    async def secagg_message(
        round: Annotated[str, FastApiPath(pattern="^(keys|shares|masked|unmask|abort)$")],
        request: Request,
        caller: Identity,
    ) -> dict:
        who, key = worker(caller), request_key(request)
        body = await request.body()

        def take() -> dict:
            with sessions() as s:
                return cycles.secure.submit(s, key, who, round, body)

        return await run_in_threadpool(take)

    return app


def app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory``: the data folder, database URL and limits come from
    the OM_TEACH_NODE_DATA, _DATABASE, _MAX_UPLOAD and _MAX_BATCH environment variables."""
    limits = Limits(
        upload_bytes=int(os.environ.get("OM_TEACH_NODE_MAX_UPLOAD", Limits.upload_bytes)),
        batch_rows=int(os.environ.get("OM_TEACH_NODE_MAX_BATCH", Limits.batch_rows)),
    )
    return create_app(
        Path(os.environ["OM_TEACH_NODE_DATA"]),
        os.environ.get("OM_TEACH_NODE_DATABASE") or None,
        limits,
    )
