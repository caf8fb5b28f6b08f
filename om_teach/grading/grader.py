"""Grade exam submissions: each runs with papermill, its kernel in the sandbox, with the
student's own seed; hidden checks call the student's functions inside and are judged outside.

A run is resumable: the gradebook records each submission in its own transaction, and a run
started again skips what is already graded under the same submission and key. A failure of
the grader's machinery (the sandbox cannot start, a worker crashes) is recorded as an error,
not a zero, and is retried by the next run. A submission stopped by its own limits (memory or
processes of its whole tree, time) is graded as it stands, never retried: the questions it
reached keep their points. The run folder's executed notebooks, feedback and gradebook are
the instructor's alone (folders 0700, files 0600): executed notebooks hold the hidden inputs.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import multiprocessing
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import nbformat

from om_teach.grading.gradebook import Grade, Gradebook, write_feedback
from om_teach.grading.harness import harness_cells, output_path, read_results
from om_teach.grading.key import AnswerKey
from om_teach.grading.sandbox import (
    FIRST_UID,
    UID_BLOCK,
    UID_BLOCKS,
    Limits,
    SandboxedKernelManager,
    bubblewrap_version,
)
from om_teach.grading.spec import Exam, ExamError, claimed_student_id, read_notebook
from om_teach.tree_limit import tree_limit

UNSAFE = "none (--unsafe-no-sandbox)"
STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
"""Student ids also name feedback files, so they carry no path separators."""


class GradingError(ValueError):
    """The grader cannot start: a missing sandbox, secret or roster entry."""


def student_seed(secret: bytes, student_id: str) -> int:
    """HMAC-SHA256(instructor secret, student id) as a 63-bit seed: each student gets other
    data and other hidden inputs, and nobody without the secret can tell which."""
    digest = hmac.new(secret, student_id.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def read_roster(path: Path) -> list[tuple[Path, str]]:
    """``(submission path, student id)`` pairs from a CSV with columns ``file,student_id``;
    paths are relative to the roster's folder."""
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        if not reader.fieldnames or not {"file", "student_id"} <= set(reader.fieldnames):
            raise GradingError(f"{path}: the roster needs the columns file,student_id")
        rows = [(path.parent / r["file"], r["student_id"].strip()) for r in reader]
    ids = [sid for _, sid in rows]
    bad = [sid for sid in ids if not STUDENT_ID.fullmatch(sid)]
    if bad:
        raise GradingError(
            f"{path}: student ids must be letters, digits and . _ @ -, got {bad[:3]}"
        )
    if len(set(ids)) != len(ids):
        raise GradingError(f"{path}: student ids repeat")
    return rows


@dataclass(frozen=True)
class Execution:
    """What came back from one sandboxed run: each question's results, or a machinery error;
    ``stopped`` says why the submission's own limits stopped it, if they did."""

    results: dict[str, list[dict] | None]
    error: str | None
    seconds: float
    stopped: str | None = None


_UID = FIRST_UID


def _start_worker(uids: multiprocessing.Queue) -> None:
    """Each worker takes a uid of its own; papermill is imported once here."""
    global _UID
    _UID = uids.get()
    import papermill  # noqa: F401

    import om_teach.grading.output_cap  # noqa: F401  (registers the capped engine)


def execute(
    notebook: str,
    parameters: dict,
    calls: list[tuple[str, str, list]],
    limits: Limits,
    sandboxed: bool,
    executed: Path,
) -> Execution:
    """Run one submission with the harness appended, in limits on its whole process tree, and
    collect the harness's results."""
    import papermill

    from om_teach.grading.output_cap import ENGINE

    start = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="om-teach-grade-"))
    scratch = workdir / "scratch"
    scratch.mkdir()
    nonce = secrets.token_hex(8)
    nb = nbformat.reads(notebook, as_version=4)
    nb.cells += harness_cells(calls, scratch, nonce)
    nbformat.write(nb, workdir / "in.ipynb")
    limit = tree_limit(
        f"submission-{nonce}", memory_mb=limits.memory_mb, processes=limits.processes
    )
    km = SandboxedKernelManager(
        scratch=scratch,
        limits=limits,
        uid=_UID,
        kernel_log=workdir / "kernel.log",
        limit=limit,
        confined=sandboxed,
    )
    out_of_time = threading.Event()
    watchdog = threading.Timer(limits.total_seconds, _time_out, args=(km, out_of_time))
    watchdog.start()
    try:
        papermill.execute_notebook(
            str(workdir / "in.ipynb"),
            str(workdir / "out.ipynb"),
            parameters=parameters,
            kernel_name="python3",
            km=km,
            engine_name=ENGINE,
            cwd=str(scratch),
            allow_errors=True,
            interrupt_on_timeout=True,
            execution_timeout=limits.cell_seconds,
            progress_bar=False,
        )
    except Exception as err:  # a killed or crashed kernel: judged on what it wrote
        failure = f"{type(err).__name__}: {str(err).strip()[:300]}"
    else:
        failure = None
    finally:
        watchdog.cancel()
        _kill(km)
        stopped = limit.stopped()
        limit.close()
    if stopped is None and out_of_time.is_set():
        stopped = f"its time ran out ({limits.total_seconds:g} s for the whole submission)"
    ran = _ran_any_cell(workdir / "out.ipynb")
    if ran:
        executed.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(workdir / "out.ipynb", executed)
        os.chmod(executed, 0o600)
    results = {qid: read_results(output_path(scratch, nonce, qid)) for qid, _, _ in calls}
    log_file = workdir / "kernel.log"
    log = log_file.read_text(errors="replace")[-500:].strip() if log_file.is_file() else ""
    error = None if ran else f"the kernel never ran: {failure} {log}".strip()
    shutil.rmtree(workdir, ignore_errors=True)
    return Execution(results, error, time.perf_counter() - start, stopped)


def _time_out(km, out_of_time: threading.Event) -> None:
    out_of_time.set()
    _kill(km)


def _kill(km) -> None:
    """Kill the kernel (in the sandbox: bwrap, whose death ends every process inside)."""
    process = getattr(getattr(km, "provisioner", None), "process", None)
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()


def _ran_any_cell(path: Path) -> bool:
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return False
    return any(c.get("execution_count") for c in nb.cells if c.cell_type == "code")


def grade(
    exam: Exam,
    key: AnswerKey,
    roster: list[tuple[Path, str]],
    *,
    out: Path,
    secret: bytes,
    jobs: int = 1,
    regrade: bool = False,
    unsafe_no_sandbox: bool = False,
    progress: bool = True,
) -> list[Grade]:
    """Grade every submission on the roster into ``out`` (gradebook, feedback, CSV, executed
    notebooks); returns the grades of this run, skipped ones excluded."""
    from tqdm.auto import tqdm

    sandbox = UNSAFE if unsafe_no_sandbox else bubblewrap_version()
    if sandbox is None:
        raise GradingError(
            "bubblewrap (bwrap) is missing or cannot create a sandbox here: install it "
            "(apt-get install bubblewrap), or pass --unsafe-no-sandbox to run student code "
            "unconfined (recorded in the gradebook)"
        )
    if not 1 <= jobs <= UID_BLOCK:
        raise GradingError(f"jobs must be between 1 and {UID_BLOCK}, got {jobs}")
    _private_run_folder(out)
    grades: list[Grade] = []
    with Gradebook(out / "gradebook.sqlite") as book:
        run_id = book.start_run(
            exam_id=exam.id, key_sha256=key.sha256, sandbox=sandbox, jobs=jobs, regrade=regrade
        )

        def finish(grade: Grade) -> None:
            book.record(run_id, grade)
            write_feedback(
                grade,
                titles={q.id: q.title for q in exam.questions},
                hints={q.id: q.hint for q in exam.questions},
                path=out / "feedback" / f"{grade.student_id}.md",
            )
            grades.append(grade)

        context = multiprocessing.get_context("spawn")
        uids = context.Queue()
        block = FIRST_UID + secrets.randbelow(UID_BLOCKS) * UID_BLOCK
        for slot in range(jobs):
            uids.put(block + slot)
        status = "interrupted"
        try:
            with ProcessPoolExecutor(
                jobs, mp_context=context, initializer=_start_worker, initargs=(uids,)
            ) as pool:
                futures: dict[Future, tuple[dict, list, tuple[str, ...]]] = {}
                for path, student_id in roster:
                    base = _base(exam, key, path, student_id, sandbox)
                    if not regrade and book.is_graded(
                        exam_id=exam.id,
                        student_id=student_id,
                        submission_sha256=base["submission_sha256"],
                        key_sha256=key.sha256,
                    ):
                        continue
                    try:
                        nb = read_notebook(path)
                    except ExamError as err:  # the student's file, not our machinery: zero
                        zero = dict.fromkeys(base["max_points"], 0.0)
                        finish(
                            Grade(
                                status="graded",
                                points=zero,
                                passed=False,
                                flags=(str(err),),
                                **base,
                            )
                        )
                        continue
                    claimed = claimed_student_id(nb)
                    flags: tuple[str, ...] = ()
                    if claimed != student_id:
                        flags = (
                            f"student_id in the notebook is {claimed!r}, roster: {student_id!r}",
                        )
                    seed = student_seed(secret, student_id)
                    calls = [(q.id, q.function, key.cases(q.id, seed)) for q in exam.questions]
                    future = pool.submit(
                        execute,
                        nbformat.writes(nb),
                        {"student_id": student_id, "seed": seed},
                        calls,
                        exam.limits,
                        sandbox != UNSAFE,
                        out / "executed" / f"{student_id}.ipynb",
                    )
                    futures[future] = (base, calls, flags)
                done = as_completed(futures)
                for future in tqdm(
                    done,
                    total=len(futures),
                    desc=f"grading {exam.id}",
                    unit="submission",
                    disable=not progress,
                ):
                    base, calls, flags = futures[future]
                    finish(_judge(exam, key, future, base, calls, flags))
            status = "finished"
        finally:
            book.finish_run(run_id, status=status)
        book.export_csv(exam.id, out / "grades.csv", [q.id for q in exam.questions])
    _private_run_folder(out)
    return grades


def _private_run_folder(out: Path) -> None:
    """Make the run folder's instructor-only parts 0700 (folders) and 0600 (files)."""
    for folder in (out, out / "feedback", out / "executed"):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        for path in folder.iterdir():
            if path.is_file() and not path.is_symlink():
                os.chmod(path, 0o600)


def _base(exam: Exam, key: AnswerKey, path: Path, student_id: str, sandbox: str) -> dict:
    """The fields every grade of this submission shares."""
    data = path.read_bytes() if path.is_file() else b""
    return dict(
        student_id=student_id,
        submission=path.name,
        submission_sha256=hashlib.sha256(data).hexdigest(),
        key_sha256=key.sha256,
        exam_id=exam.id,
        max_points={q.id: q.points for q in exam.questions},
        sandbox=sandbox,
    )


def _judge(
    exam: Exam, key: AnswerKey, future: Future, base: dict, calls: list, flags: tuple[str, ...]
) -> Grade:
    """Judge one finished execution outside the sandbox; a machinery failure is an error."""
    try:
        execution = future.result()
    except Exception as err:  # the worker itself crashed: machinery, not the student
        execution = Execution({}, f"the grader's worker failed: {err!r}", 0.0)
    if execution.error is not None:
        return Grade(
            status="error",
            points={},
            passed=None,
            flags=flags,
            error=execution.error,
            seconds=execution.seconds,
            **base,
        )
    points = {
        qid: base["max_points"][qid] if key.correct(qid, cases, execution.results.get(qid)) else 0.0
        for qid, _, cases in calls
    }
    passed = sum(points.values()) >= exam.pass_mark * exam.max_points
    return Grade(
        status="graded",
        points=points,
        passed=passed,
        flags=flags,
        seconds=execution.seconds,
        stopped=execution.stopped,
        **base,
    )
