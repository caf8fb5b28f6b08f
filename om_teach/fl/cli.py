"""``om-teach fl simulate``: federated training on digits from a terminal, with any strategy,
a progress bar and a table of test accuracy per round.

Only :func:`add_commands` is imported with ``om-teach``; the command imports torch when it runs.
"""

from __future__ import annotations

import argparse
import math

STRATEGIES = ("fedavg", "fedadam", "fedyogi", "dp", "secagg")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``fl simulate`` to ``om-teach``'s commands."""
    fl = commands.add_parser("fl", help="federated learning on digits: simulate")
    sub = fl.add_subparsers(dest="fl_command", required=True)
    sim = sub.add_parser("simulate", help="train on digits split across in-process clients")
    sim.add_argument("--clients", type=int, default=20, help="data owners (default 20)")
    sim.add_argument("--rounds", type=int, default=10, help="rounds (default 10)")
    sim.add_argument("--split", choices=("iid", "dirichlet"), default="iid")
    sim.add_argument("--alpha", type=float, default=0.3, help="Dirichlet concentration")
    sim.add_argument("--strategy", choices=STRATEGIES, default="fedavg")
    sim.add_argument("--fraction", type=float, default=1.0, help="clients sampled per round")
    sim.add_argument("--learning-rate", type=float, default=0.1, help="clients' SGD step")
    sim.add_argument("--batch-size", type=int, default=16)
    sim.add_argument("--epochs", type=int, default=1, help="local epochs per round")
    sim.add_argument("--server-learning-rate", type=float, default=0.01, help="FedAdam/FedYogi η")
    sim.add_argument("--clip-norm", type=float, default=1.0, help="DP: C")
    sim.add_argument("--noise-multiplier", type=float,
                     help="DP: z (the noise comes from the OS, not from --seed)")  # fmt: skip
    sim.add_argument("--budget", type=float, help="DP: the most ε the run may spend")
    sim.add_argument("--noise-at", choices=("server", "client"), default="server")
    sim.add_argument("--threshold", type=int, help="secagg: t (default: half the clients, + 1)")
    sim.add_argument("--seed", type=int, default=0)
    sim.set_defaults(func=_simulate)


def make_strategy(args: argparse.Namespace, max_examples: int):
    """The strategy that ``--strategy`` and its options name; ValueError on a bad setting."""
    from om_teach.fl.dp import DPFedAvg
    from om_teach.fl.secure import SecAggFedAvg
    from om_teach.fl.strategy import FedAdam, FedAvg, FedYogi

    sampling = {"fraction": args.fraction}
    if args.strategy == "fedavg":
        return FedAvg(**sampling)
    if args.strategy in ("fedadam", "fedyogi"):
        kind = FedAdam if args.strategy == "fedadam" else FedYogi
        return kind(eta=args.server_learning_rate, **sampling)
    if args.strategy == "dp":
        if args.noise_multiplier is None:
            raise ValueError("--strategy dp needs --noise-multiplier (z) and --budget (ε)")
        return DPFedAvg(clip_norm=args.clip_norm, noise_multiplier=args.noise_multiplier,
                        budget=args.budget, noise_at=args.noise_at, **sampling)  # fmt: skip
    sampled = max(1, math.ceil(args.fraction * args.clients))
    threshold = args.threshold if args.threshold is not None else sampled // 2 + 1
    return SecAggFedAvg(threshold=threshold, max_examples=max_examples, **sampling)


def _simulate(args: argparse.Namespace) -> int:
    """Run the simulation and print a row per round."""
    from om_teach.data.digits import load_digits
    from om_teach.data.partition import dirichlet, iid
    from om_teach.fl.models import accuracy, mlp
    from om_teach.fl.simulation import simulate
    from om_teach.privacy.accounting import BudgetExceeded

    digits = load_digits(args.seed)
    X, y = digits.X_train, digits.y_train
    if args.split == "iid":
        parts = iid(len(X), args.clients, seed=args.seed)
    else:
        parts = dirichlet(y, args.clients, args.alpha, seed=args.seed)
    strategy = make_strategy(args, max_examples=max(len(p) for p in parts))
    try:
        results = simulate(
            mlp(args.seed),
            [(X[p], y[p]) for p in parts],
            strategy,
            rounds=args.rounds,
            learning_rate=args.learning_rate,
            batch_size=args.batch_size,
            epochs=args.epochs,
            seed=args.seed,
            evaluate=lambda m: {"accuracy": accuracy(m, digits.X_test, digits.y_test)},
            progress=True,
        )
    except BudgetExceeded as err:
        raise ValueError(
            f"{err}; ask for fewer --rounds, a larger --budget or --noise-multiplier, or sample "
            "fewer clients a round (--fraction)"
        ) from None
    print(f"{'round':>5}  {'clients':>7}  {'accuracy':>8}  {'seconds':>7}")
    for r in results:
        accuracy_ = r.metrics["accuracy"]
        print(f"{r.round + 1:>5}  {len(r.clients):>7}  {accuracy_:>8.3f}  {r.seconds:>7.2f}")
    if hasattr(strategy, "epsilon"):
        against = strategy.epsilon_against_server(len(results[-1].clients))
        print(
            f"ε at δ = {strategy.budget.delta:g}: {strategy.epsilon:.2f} against readers of the "
            f"model, {against:.2f} against the server (noise at the {strategy.noise_at})"
        )
    return 0
