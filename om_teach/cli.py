"""The ``om-teach`` command: open the course, run it, take and grade exams, sign and verify
certificates, and check the machine."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from om_teach import syllabus as syllabus_mod

START_PAGE = "notebooks/00_welcome/00_welcome.ipynb"


def _lab(args: argparse.Namespace) -> int:
    """Open JupyterLab at the course's start page."""
    root = syllabus_mod.repo_root()
    command = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={root}", START_PAGE]
    if os.geteuid() == 0:  # containers and CI machines run as root; Jupyter refuses without this
        command.append("--allow-root")
    os.chdir(root)
    os.execv(sys.executable, command + list(args.jupyter_args))
    return 0  # not reached: exec replaces this process


def _course_list(args: argparse.Namespace) -> int:
    """Print the syllabus as a table, in course order."""
    course = syllabus_mod.load(args.syllabus)
    print(f"{course.title} (version {course.version})\n")
    print(f"{'module':34} {'status':8} {'min':>4}  {'exam':14} use case")
    for m in course.modules:
        print(f"{m.id:34} {m.status:8} {m.minutes:>4}  {m.exam:14} {m.use_case}")
    final = next(e for e in course.exams if e.final)
    print(f"\nFinal exam: {final.title} ({final.id}, {final.status})")
    return 0


def _course_run(args: argparse.Namespace) -> int:
    """Run the ready notebooks headless and print their time and memory against the budget."""
    from om_teach.runner import format_table, run_course

    course = syllabus_mod.load(args.syllabus)
    parameters = {"seed": args.seed} if args.seed is not None else None
    results = run_course(course, args.modules, out_dir=Path(args.out), parameters=parameters)
    print(format_table(results))
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"FAILED {r.notebook}: {'; '.join(r.problems)}", file=sys.stderr)
    return 1 if failed else 0


def _exam_check(args: argparse.Namespace) -> int:
    """Validate a filled-in exam and run its public self-checks, without the key."""
    from om_teach.grading.check import check, report
    from om_teach.grading.spec import load_exam

    exam = load_exam(args.exam) if args.exam else None
    statuses = check(Path(args.notebook), exam)
    print(report(statuses))
    return 0 if all(s.defined and s.self_check == "passed" for s in statuses) else 1


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


def summary(exam, grades) -> str:
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


def _certify(args: argparse.Namespace) -> int:
    """Sign a certificate for each passing student of a gradebook, or make the signing key."""
    from om_teach.grading import certificate

    if args.certify_command is None and not (args.gradebook and args.exam):
        raise ValueError("certify needs --gradebook and --exam (or the subcommand init-key)")
    if args.certify_command == "init-key":
        path = certificate.init_key(Path(args.path) if args.path else None, force=args.force)
        print(f"signing key: {path} (0600); public key: {path.with_suffix('.pub')}")
        return 0
    import datetime

    from om_teach.grading.gradebook import Gradebook
    from om_teach.grading.spec import load_exam

    exam = load_exam(args.exam)
    key = certificate.load_signing_key(Path(args.key) if args.key else None)
    version = syllabus_mod.load().version
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with Gradebook(Path(args.gradebook)) as book:
        passing = [g for g in book.latest(exam.id) if g.status == "graded" and g.passed]
    for g in passing:
        cert = certificate.issue(
            student_id=g.student_id,
            exam_id=exam.id,
            exam_title=exam.title,
            score=g.total,
            max_score=g.max_total,
            submission_sha256=g.submission_sha256,
            course_version=version,
            issued=datetime.date.today(),
            signing_key=key,
        )
        certificate.save(cert, out / f"{g.student_id}.json")
    print(f"{len(passing)} certificate(s) written to {out}")
    return 0


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


def _sonar(args: argparse.Namespace) -> int:
    """Run the Sonar platform: ``om-teach sonar demo|up|down [options]``."""
    from om_teach.sonar import cli as sonar_cli

    handlers = {
        "demo": sonar_cli.demo_main,
        "up": sonar_cli.up_main,
        "down": sonar_cli.down_main,
        "capsule": sonar_cli.capsule_main,
    }
    return handlers[args.sonar_command](args.sonar_args)


def _doctor(args: argparse.Namespace) -> int:
    """Check what the course needs on this machine."""
    from om_teach.doctor import report, run_checks

    checks = run_checks()
    print(report(checks))
    return 1 if any(c.required and not c.ok for c in checks) else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``om-teach`` and its subcommands."""
    parser = argparse.ArgumentParser(prog="om-teach", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    lab = commands.add_parser(
        "lab", help="open the course in JupyterLab (other options go to jupyter lab)"
    )
    lab.set_defaults(func=_lab)

    course = commands.add_parser("course", help="list or run the course").add_subparsers(
        dest="course_command", required=True
    )
    listing = course.add_parser("list", help="show the syllabus")
    listing.set_defaults(func=_course_list)
    run = course.add_parser("run", help="run every ready notebook headless, with its budget")
    run.add_argument("modules", nargs="*", help="module ids (default: all ready modules)")
    run.add_argument("--out", default="build/course", help="where executed notebooks go")
    run.add_argument("--seed", type=int, help="override every notebook's seed parameter")
    run.set_defaults(func=_course_run)
    for sub in (listing, run):
        sub.add_argument("--syllabus", help="a syllabus file (default: course/syllabus.toml)")

    exam = commands.add_parser("exam", help="student tools for exams").add_subparsers(
        dest="exam_command", required=True
    )
    exam_check = exam.add_parser("check", help="validate a filled-in exam and run its self-checks")
    exam_check.add_argument("notebook")
    exam_check.add_argument("--exam", help="the exam folder (default: from the notebook)")
    exam_check.set_defaults(func=_exam_check)

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

    certify = commands.add_parser("certify", help="sign certificates for passing students")
    certify_commands = certify.add_subparsers(dest="certify_command")
    init_key = certify_commands.add_parser("init-key", help="make the Ed25519 signing key")
    init_key.add_argument("--path", help="where (default ~/.config/om-teach/signing-key.pem)")
    init_key.add_argument("--force", action="store_true", help="replace an existing key")
    certify.add_argument("--gradebook", help="RUN/gradebook.sqlite")
    certify.add_argument("--exam", help="the exam folder")
    certify.add_argument("--out", default="certificates", help="where certificates go")
    certify.add_argument("--key", help="the signing key (default ~/.config/om-teach/...)")
    certify.set_defaults(func=_certify)

    verify = commands.add_parser("verify", help="check a certificate")
    verify.add_argument("certificate")
    verify.add_argument("--public-key", required=True, help="the instructor's .pub file")
    verify.set_defaults(func=_verify)

    sonar = commands.add_parser(  # its own options (and -h) go to the sonar command
        "sonar",
        add_help=False,
        help="the Hydrogen/Helium platform: demo, up, down (see om-teach sonar demo -h)",
    )
    sonar.add_argument("sonar_command", choices=("demo", "up", "down", "capsule"))
    sonar.set_defaults(func=_sonar)

    doctor = commands.add_parser("doctor", help="check what the course needs on this machine")
    doctor.set_defaults(func=_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``om-teach`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "lab":
        args.jupyter_args = extra
    elif args.command == "sonar":
        args.sonar_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except (KeyError, ValueError, OSError) as err:  # bad input: a message, not a traceback
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"om-teach: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
