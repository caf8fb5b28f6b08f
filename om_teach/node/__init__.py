"""The node people run: models hosted over HTTP (FastAPI under uvicorn), with state in SQL
(SQLAlchemy and Alembic migrations), blobs by content address, scoped tokens, and no unpickling.

:mod:`~om_teach.node.app` is the application, :mod:`~om_teach.node.client` its Python client,
:mod:`~om_teach.node.process` starts and stops one as a separate process, and
:mod:`~om_teach.node.cli` is ``om-teach node``.
"""

PROTOCOL = "1"  # the API version a client names in the OM-Teach-Protocol header
PROTOCOL_HEADER = "OM-Teach-Protocol"
