"""A papermill engine that keeps a bounded amount of a submission's output.

Without it, one cell printing 400 MB grew the grader's worker to 1.3 GB and wrote a 419 MB
executed notebook. Two walls stop that: the kernel client's sockets drop any message over
8 MB (:class:`~om_teach.grading.sandbox.CappedKernelClient`), and this engine keeps at most
:data:`CELL_BYTES` of output per cell and :data:`NOTEBOOK_BYTES` per notebook, replacing what
it drops with one line that says so.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from nbformat import NotebookNode
from nbformat.v4 import new_output
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger

from om_teach.grading.sandbox import MAX_MESSAGE_BYTES

ENGINE = "om-teach-capped"
CELL_BYTES = 2 * 1024 * 1024
NOTEBOOK_BYTES = 10 * 1024 * 1024


def cut_notice(limit: str) -> str:
    """The line that replaces the output the grader did not keep."""
    return f"[om-teach: output cut here: {limit}]\n"


class CappedNotebookClient(PapermillNotebookClient):
    """Keeps each cell's and the notebook's output under their caps, marking the cut."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kept_bytes = 0
        self.kept_per_cell: dict[int, int] = {}
        self.cut_cells: set[int] = set()
        self.lost_output: set[int] = set()
        self.on_cell_executed = self._mark_lost

    async def _async_poll_output_msg(self, parent_msg_id: str, cell: NotebookNode, cell_index: int):
        """As nbclient's, noting the cells whose output stopped arriving: ZMQ drops a message
        over the size cap, and with it the rest of that cell's output."""
        try:
            return await super()._async_poll_output_msg(parent_msg_id, cell, cell_index)
        except asyncio.CancelledError:
            self.lost_output.add(cell_index)
            raise

    async def _mark_lost(self, cell: NotebookNode, cell_index: int, **_: Any) -> None:
        """Say so in a cell whose output was lost, and connect the output channel anew: ZMQ
        does not reconnect a socket that refused a message, so later cells would lose theirs."""
        if cell_index not in self.lost_output:
            return
        limit = f"a message over {MAX_MESSAGE_BYTES // 2**20} MB was dropped"
        cell.outputs.append(new_output("stream", name="stderr", text=cut_notice(limit)))
        self.kc.iopub_channel.close()
        self.kc._iopub_channel = None  # the property connects a new socket on next use
        self.kc.iopub_channel.start()

    def output(
        self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None, cell_index: int
    ) -> NotebookNode | None:
        size = len(json.dumps(msg.get("content", {}), default=str))
        cell = self.kept_per_cell.get(cell_index, 0)
        if cell + size <= CELL_BYTES and self.kept_bytes + size <= NOTEBOOK_BYTES:
            self.kept_per_cell[cell_index] = cell + size
            self.kept_bytes += size
            return super().output(outs, msg, display_id, cell_index)
        if cell_index not in self.cut_cells:
            self.cut_cells.add(cell_index)
            limit = (
                f"more than {CELL_BYTES // 2**20} MB in this cell"
                if cell + size > CELL_BYTES
                else f"more than {NOTEBOOK_BYTES // 2**20} MB in the notebook"
            )
            outs.append(new_output("stream", name="stderr", text=cut_notice(limit)))
        return None


class CappedEngine(NBClientEngine):
    """papermill's nbclient engine, with :class:`CappedNotebookClient`."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: int = 60,
        execution_timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        for unused in ("input_path", "timeout", "startup_timeout"):
            kwargs.pop(unused, None)
        client = CappedNotebookClient(
            nb_man,
            raise_on_iopub_timeout=False,
            timeout=execution_timeout,
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=logger,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
            **kwargs,
        )
        return client.execute()


papermill_engines.register(ENGINE, CappedEngine)
