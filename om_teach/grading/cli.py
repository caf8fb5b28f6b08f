"""``om-teach grade``, ``certify`` and ``verify``: grade a class in the sandbox, clear the flags
the instructor has reviewed, sign certificates for clean passing grades, and check one.

- ``grade EXAM --roster CSV --key DIR --out RUN``: grade every submission into RUN.
- ``certify --gradebook RUN/gradebook.sqlite --exam EXAM``: sign a certificate for each grade
  that earns one (:mod:`om_teach.grading.eligibility`), and print one line for each refusal.
- ``certify clear STUDENT --reason TEXT --gradebook ... --exam ...``: clear a reviewed flag.
- ``certify init-key``: make the signing key. ``verify CERT --public-key PUB``: check one.

Only :func:`add_commands` is imported with ``om-teach``; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from om_teach.grading.eligibility import Decision
    from om_teach.grading.gradebook import Grade, Gradebook
    from om_teach.grading.spec import Exam


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add grade, certify (with init-key and clear) and verify to ``om-teach``'s commands."""
    grading = commands.add_parser("grade", help="grade submissions in the sandbox")
    grading.add_argument("exam", help="the exam folder, e.g. exams/toolbox")
    grading.add_argument("--roster", required=True, help="CSV with columns file,student_id")
    grading.add_argument("--key", required=True, help="the answer key folder (kept private)")
    grading.add_argument("--out", required=True, help="the run folder: gradebook, feedback, CSV")
    grading.add_argument("-j", "--jobs", type=int, default=1, help="submissions in parallel")
    grading.add_argument("--regrade", action="store_true", help="grade again what is graded")
    grading.add_argument("--secret-file", help="instructor secret (else $OM_TEACH_SECRET)")
    grading.add_argument(
        "--unsafe-no-sandbox", action="store_true", help="run student code without bubblewrap"
    )
    grading.set_defaults(func=_grade)

    certify = commands.add_parser(
        "certify", help="sign certificates for clean passing grades; clear reviewed flags"
    )
    certify_commands = certify.add_subparsers(dest="certify_command")
    init_key = certify_commands.add_parser("init-key", help="make the Ed25519 signing key")
    init_key.add_argument("--path", help="where (default ~/.config/om-teach/signing-key.pem)")
    init_key.add_argument("--force", action="store_true", help="replace an existing key")
    init_key.set_defaults(func=_init_key)
    clear = certify_commands.add_parser(
        "clear", help="clear a student's reviewed flags, with the reason, so the grade can count"
    )
    clear.add_argument("student", help="the student id")
    clear.add_argument("--reason", required=True, help="why the flags do not matter (recorded)")
    clear.add_argument("--gradebook", required=True, help="RUN/gradebook.sqlite")
    clear.add_argument("--exam", required=True, help="the exam folder")
    clear.add_argument("--by", help="who clears them (default: your login name)")
    clear.set_defaults(func=_clear)
    certify.add_argument("--gradebook", help="RUN/gradebook.sqlite")
    certify.add_argument("--exam", help="the exam folder")
    certify.add_argument("--out", default="certificates", help="where certificates go")
    certify.add_argument("--key", help="the signing key (default ~/.config/om-teach/...)")
    certify.add_argument(
        "--answer-key", help="the current answer key folder (default: that of the newest run)"
    )
    certify.set_defaults(func=_certify)

    verify = commands.add_parser("verify", help="check a certificate")
    verify.add_argument("certificate")
    verify.add_argument("--public-key", required=True, help="the instructor's .pub file")
    verify.set_defaults(func=_verify)


def _secret(args: argparse.Namespace) -> bytes:
    """The instructor secret behind each student's seed: --secret-file, else $OM_TEACH_SECRET."""
    if args.secret_file:
        return Path(args.secret_file).read_bytes().strip()
    if os.environ.get("OM_TEACH_SECRET"):
        return os.environ["OM_TEACH_SECRET"].encode()
    raise ValueError(
        "no instructor secret: pass --secret-file FILE or set OM_TEACH_SECRET "
        "(make one with: python -c 'import secrets; print(secrets.token_hex(32))' > FILE)"
    )


def _grade(args: argparse.Namespace) -> int:
    """Grade every submission of a roster in the sandbox, into a gradebook."""
    from om_teach.grading.grader import grade, read_roster
    from om_teach.grading.key import AnswerKey
    from om_teach.grading.spec import load_exam

    exam = load_exam(args.exam)
    key = AnswerKey(exam, args.key)
    grades = grade(
        exam,
        key,
        read_roster(Path(args.roster)),
        out=Path(args.out),
        secret=_secret(args),
        jobs=args.jobs,
        regrade=args.regrade,
        unsafe_no_sandbox=args.unsafe_no_sandbox,
    )
    print(summary(exam, grades))
    return 1 if any(g.status == "error" for g in grades) else 0


def summary(exam: Exam, grades: list[Grade]) -> str:
    """The table printed after a grading run: per student, then per question."""
    lines = [f"{'student':16} {'status':7} {'points':>8}  result  seconds  flags"]
    for g in sorted(grades, key=lambda g: g.student_id):
        result = "-" if g.passed is None else ("pass" if g.passed else "fail")
        points = f"{g.total:g}/{g.max_total:g}" if g.status == "graded" else "-"
        flags = "; ".join(g.flags) or (g.error or "")
        lines.append(
            f"{g.student_id:16} {g.status:7} {points:>8}  {result:6}  {g.seconds:7.2f}  {flags}"
        )
    graded = [g for g in grades if g.status == "graded"]
    if not grades:
        lines.append("\nnothing newly graded (already graded under this key: use --regrade)")
    elif graded:
        rates = ", ".join(
            f"{q.id} {sum(g.points.get(q.id, 0) > 0 for g in graded) / len(graded):.0%}"
            for q in exam.questions
        )
        lines.append(f"\n{len(graded)} graded, {len(grades) - len(graded)} errors; solved: {rates}")
    else:
        lines.append(
            f"\n{len(grades)} errors: the grader's machinery failed; they are retried next run"
        )
    return "\n".join(lines)


def _init_key(args: argparse.Namespace) -> int:
    """Make the instructor's Ed25519 signing key."""
    from om_teach.grading import certificate

    path = certificate.init_key(Path(args.path) if args.path else None, force=args.force)
    print(f"signing key: {path} (0600); public key: {path.with_suffix('.pub')}")
    return 0


def _existing_gradebook(path: str) -> Path:
    """The gradebook at ``path``; refused when missing, rather than created empty."""
    if not Path(path).is_file():
        raise ValueError(f"no gradebook at {path}: pass the RUN/gradebook.sqlite of a grading run")
    return Path(path)


def _clear(args: argparse.Namespace) -> int:
    """Clear a student's reviewed flags, recording the reason, who and when, in the gradebook."""
    from om_teach.grading.gradebook import Gradebook
    from om_teach.grading.spec import load_exam

    gradebook = _existing_gradebook(args.gradebook)
    exam = load_exam(args.exam)
    with Gradebook(gradebook) as book:
        cleared = book.clear(
            exam.id, args.student, reason=args.reason, cleared_by=args.by or getpass.getuser()
        )
    print(
        f"cleared: {cleared.student_id} ({'; '.join(cleared.flags)}) by {cleared.cleared_by}: "
        f"{cleared.reason}"
    )
    return 0


def _certify(args: argparse.Namespace) -> int:
    """Sign a certificate for each grade that earns one; print why each other one does not."""
    from om_teach import syllabus
    from om_teach.grading import certificate
    from om_teach.grading.eligibility import decide
    from om_teach.grading.gradebook import Gradebook
    from om_teach.grading.spec import load_exam

    if not (args.gradebook and args.exam):
        raise ValueError("certify needs --gradebook and --exam (or a subcommand: init-key, clear)")
    gradebook = _existing_gradebook(args.gradebook)
    exam = load_exam(args.exam)
    signing_key = certificate.load_signing_key(Path(args.key) if args.key else None)
    version = syllabus.load().version
    with Gradebook(gradebook) as book:
        decisions = decide(book, exam, _current_key(args, exam, book))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for d in decisions:
        if d.refusals:
            print(f"not certified: {d.grade.student_id}: {'; '.join(d.refusals)}")
            continue
        cert = certificate.issue(
            student_id=d.grade.student_id,
            exam_id=exam.id,
            exam_title=exam.title,
            score=d.grade.total,
            max_score=d.grade.max_total,
            submission_sha256=d.grade.submission_sha256,
            course_version=version,
            issued=datetime.date.today(),
            signing_key=signing_key,
        )
        certificate.save(cert, out / f"{d.grade.student_id}.json")
        print(_certified(d))
    issued = sum(not d.refusals for d in decisions)
    print(f"{issued} certificate(s) written to {out}")
    return 0


def _certified(decision: Decision) -> str:
    """The line for a certified student, with the clearance its flags needed, if any."""
    line = f"certified: {decision.grade.student_id}"
    if cleared := decision.clearance:
        line += f", flags cleared by {cleared.cleared_by} on {cleared.cleared_at}: {cleared.reason}"
    return line


def _current_key(args: argparse.Namespace, exam: Exam, book: Gradebook) -> str:
    """The sha256 of the exam's current answer key: --answer-key, else the newest run's key."""
    from om_teach.grading.key import AnswerKey

    if args.answer_key:
        return AnswerKey(exam, args.answer_key).sha256
    key = book.current_key(exam.id)
    if key is None:
        raise ValueError(f"{book.path} holds no grading run of exam {exam.id!r}: grade it first")
    return key


def _verify(args: argparse.Namespace) -> int:
    """Check one certificate against the instructor's public key."""
    from om_teach.grading import certificate

    try:
        fields = certificate.verify(Path(args.certificate), Path(args.public_key))
    except certificate.CertificateError as err:
        print(f"INVALID: {err}", file=sys.stderr)
        return 1
    print(certificate.format_verified(fields))
    return 0
