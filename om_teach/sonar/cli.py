"""``om-teach sonar demo|up|down``: the Sonar platform from the command line.

- ``demo``: start anvil, the directory store, the capsule (``--helium``) and the mines as
  separate processes (or use ``--rpc-url``/``--ipfs-api``), run ``--rounds`` rounds with a
  progress bar, print one table row per round, and stop everything. With ``--run-dir`` of a
  platform that ``up`` started, it runs the rounds there and leaves the processes up.
- ``up``: start the processes and leave them running; their PIDs go to the run folder.
- ``down``: stop the processes recorded in the run folder, from any shell.
- ``capsule init|serve|admit|show``: run a Helium capsule by hand, as its operator
  (:func:`om_teach.sonar.capsule_cli.main`).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

from om_teach.sonar.capsule import CapsuleRefusal
from om_teach.sonar.contract import ContractRevert
from om_teach.sonar.platform import STATE_FILE, Platform, Settings, down
from om_teach.sonar.scientist import RoundRecord
from om_teach.storage import TamperedContentError

DEFAULT_RUN_DIR = Path(".om-teach") / "sonar"
FAILURES = (
    CapsuleRefusal,
    ConnectionError,
    ContractRevert,
    FileNotFoundError,
    RuntimeError,
    TamperedContentError,
    TimeoutError,
    ValueError,
)
"""What a run can fail with, each naming its cause: reported in one line, not a traceback."""


def format_table(records: list[RoundRecord]) -> str:
    """One row per round: validation MSE, mines summed and excluded, ε, total paid, gas of the
    owner's calls (settling is Helium's)."""
    header = (
        f"{'round':>5}  {'val MSE':>9}  {'mines':>5}  {'excluded':>8}  {'epsilon':>8}  "
        f"{'paid (ETH)':>11}  {'gas settle':>10}  {'gas evaluate':>12}  {'gas pay':>8}"
    )
    rows = [header, "-" * len(header)]
    for r in records:
        if r.epsilon is None:
            epsilon = "-"
        else:
            epsilon = "inf" if math.isinf(r.epsilon) else f"{r.epsilon:.3f}"
        rows.append(
            f"{r.round:>5}  {r.mse:>9.5f}  {len(r.contributors):>5}  {len(r.excluded):>8}  "
            f"{epsilon:>8}  {sum(r.payouts_eth.values()):>11.6f}  "
            f"{r.gas.get('settle_round', '-'):>10}  {r.gas['evaluate_round']:>12}  "
            f"{r.gas['pay_round']:>8}"
        )
    return "\n".join(rows)


def _platform_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mines", type=int, default=10, help="data owners (separate processes)")
    parser.add_argument("--seed", type=int, default=0, help="data split and partition seed")
    parser.add_argument("--key-bits", type=int, default=2048, help="Paillier modulus size")
    parser.add_argument("--clip-norm", type=float, default=10.0, help="gradient clip norm C")
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--bounty", type=float, default=1.0, help="bounty in ETH")
    parser.add_argument("--helium", action="store_true", help="the capsule holds the key")
    parser.add_argument(
        "--noise-multiplier", type=float, default=0.0, help="Helium: noise z × C (0: none)"
    )
    parser.add_argument("--budget", type=float, default=10.0, help="Helium: ε at δ=1e-5")
    parser.add_argument("--min-contributors", type=int, default=3, help="Helium: k")
    parser.add_argument("--rpc-url", help="use this chain instead of starting anvil")
    parser.add_argument("--ipfs-api", help="use this IPFS daemon instead of a directory store")


def _platform(args: argparse.Namespace, run_dir: Path) -> Platform:
    settings = Settings(
        mines=args.mines,
        seed=args.seed,
        key_bits=args.key_bits,
        clip_norm=args.clip_norm,
        learning_rate=args.learning_rate,
        bounty_eth=args.bounty,
    )
    return Platform(
        run_dir,
        settings,
        helium=args.helium,
        rpc_url=args.rpc_url,
        ipfs_api=args.ipfs_api,
        noise_multiplier=args.noise_multiplier,
        budget=args.budget,
        min_contributors=args.min_contributors,
    )


def demo_main(argv: list[str] | None = None) -> int:
    """``om-teach sonar demo``: run the rounds and print the table."""
    parser = argparse.ArgumentParser(prog="om-teach sonar demo", description=demo_main.__doc__)
    _platform_arguments(parser)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a round waits")
    parser.add_argument("--run-dir", type=Path, help="a platform `up` started, or a new folder")
    args = parser.parse_args(argv)
    try:
        if args.run_dir is not None and (args.run_dir / STATE_FILE).is_file():
            records = Platform.attach(args.run_dir).demo(args.rounds, timeout=args.timeout)
        else:
            with (
                tempfile.TemporaryDirectory(prefix="om-teach-sonar-") as scratch,
                _platform(args, args.run_dir or Path(scratch)) as platform,
            ):
                records = platform.demo(args.rounds, timeout=args.timeout)
    except FAILURES as error:
        print(f"om-teach sonar demo: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(format_table(records))
    return 0


def up_main(argv: list[str] | None = None) -> int:
    """``om-teach sonar up``: start the platform's processes and leave them running."""
    parser = argparse.ArgumentParser(prog="om-teach sonar up", description=up_main.__doc__)
    _platform_arguments(parser)
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    args = parser.parse_args(argv)
    if (args.run_dir / STATE_FILE).is_file():
        print(f"om-teach sonar up: a platform is already up in {args.run_dir}", file=sys.stderr)
        return 1
    platform = _platform(args, args.run_dir)
    try:
        platform.up()
    except FAILURES as error:
        print(f"om-teach sonar up: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    platform.detach()
    print(f"chain {platform.rpc_url}, contract {platform.repository.address}")
    if platform.capsule_url:
        print(f"capsule {platform.capsule_url}")
    count = len(platform.processes) + (platform.node is not None)
    print(f"{count} processes up; stop them with: om-teach sonar down --run-dir {args.run_dir}")
    return 0


def capsule_main(argv: list[str] | None = None) -> int:
    """``om-teach sonar capsule``: make, serve, admit mines to, or show a capsule."""
    from om_teach.sonar.capsule_cli import main

    return main(argv)


def down_main(argv: list[str] | None = None) -> int:
    """``om-teach sonar down``: stop the processes ``up`` started."""
    parser = argparse.ArgumentParser(prog="om-teach sonar down", description=down_main.__doc__)
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    args = parser.parse_args(argv)
    try:
        stopped = down(args.run_dir)
    except FileNotFoundError as error:
        print(f"om-teach sonar down: {error}", file=sys.stderr)
        return 1
    print(f"stopped {len(stopped)} processes: {' '.join(map(str, stopped))}")
    return 0
