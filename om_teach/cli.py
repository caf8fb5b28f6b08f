"""The ``om-teach`` command: open the course, run it, take and grade exams, sign and verify
certificates, simulate federated learning, run a model-hosting node, and check the machine."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from om_teach import syllabus as syllabus_mod
from om_teach.fl import cli as fl_cli
from om_teach.grading import cli as grading_cli
from om_teach.node import cli as node_cli

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

    grading_cli.add_commands(commands)
    fl_cli.add_commands(commands)
    node_cli.add_commands(commands)

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
