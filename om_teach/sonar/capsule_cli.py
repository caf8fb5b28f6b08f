"""``om-teach sonar capsule init|serve|admit|show``: the capsule operator's commands.

``python -m om_teach.sonar.capsule_cli serve`` is the capsule process the platform starts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from om_teach.crypto.paillier import DEFAULT_KEY_BITS
from om_teach.sonar.capsule import DELTA, Capsule, check_settings
from om_teach.sonar.capsule_http import CapsuleServer
from om_teach.sonar.capsule_state import CapsuleState, StateMismatch
from om_teach.sonar.record import check_fingerprint


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="om-teach sonar capsule",
        description="Sonar's capsule: the key holder that releases only noisy round sums.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    chain = argparse.ArgumentParser(add_help=False)
    chain.add_argument("--data", type=Path, required=True, help="the capsule's state folder")
    chain.add_argument("--rpc-url", required=True, help="the chain's JSON-RPC URL")
    chain.add_argument("--contract", required=True, help="the ModelRepository's address")

    init = commands.add_parser("init", parents=[chain], help="make the keys and key record")
    init.add_argument("--budget", type=float, default=10.0, help="epsilon at delta=1e-5")
    init.add_argument("--noise-multiplier", type=float, default=1.0, help="0 turns noise off")
    init.add_argument("--min-contributors", type=int, default=3, help="k")
    init.add_argument("--key-bits", type=int, default=DEFAULT_KEY_BITS)

    serve = commands.add_parser("serve", parents=[chain], help="serve the capsule over HTTP")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    where = serve.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", help="a directory store's folder")
    where.add_argument("--ipfs-api", help="an IPFS daemon's API multiaddr")
    serve.add_argument("--fingerprint", help="refuse to start unless the state is this capsule")
    serve.add_argument(
        "--insecure-seed", type=int, help="seed the noise (for lessons only): ε is reported as ∞"
    )

    admit = commands.add_parser("admit", help="admit a mine: its address and signing key")
    admit.add_argument("--data", type=Path, required=True, help="the capsule's state folder")
    admit.add_argument("address", help="the address the mine submits from")
    admit.add_argument("verify_key", help="the mine's Ed25519 public key, 64 hex digits")

    show = commands.add_parser("show", help="print the key record, fingerprint and releases")
    show.add_argument("--data", type=Path, required=True, help="the capsule's state folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``om-teach sonar capsule init|serve|admit|show``. ``serve`` prints one JSON line
    ``{"url": ..., "pid": ..., "fingerprint": ...}`` once it is ready, and serves until
    SIGTERM."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "admit":
            state = CapsuleState.open(args.data)
            state.admit(args.address, args.verify_key)
            print(f"admitted {args.address} to capsule {state.record.fingerprint}")
            return 0
        if args.command == "show":
            state = CapsuleState.open(args.data)
            print(f"fingerprint {state.record.fingerprint}")
            print(state.record.to_bytes().decode())
            print(f"admitted: {' '.join(sorted(state.admitted())) or 'none'}")
            for release in state.releases():
                print(f"released model {release.model_id} round {release.round}: "
                      f"epsilon {release.epsilon}")  # fmt: skip
            return 0
        return _serve_or_init(args)
    except (ConnectionError, ValueError, TypeError, OSError, StateMismatch) as error:
        print(f"om-teach sonar capsule {args.command}: {error}", file=sys.stderr)
        return 2


def _serve_or_init(args: argparse.Namespace) -> int:
    from om_teach.sonar.chain import Chain
    from om_teach.sonar.contract import ModelRepository
    from om_teach.storage import DirectoryStore, IpfsStore

    repository = ModelRepository.at(Chain.connect(args.rpc_url), args.contract)
    chain_id = repository.chain.web3.eth.chain_id
    if args.command == "init":
        check_settings(args.min_contributors, args.noise_multiplier, args.budget)
        state = CapsuleState.create(
            args.data,
            chain_id=chain_id,
            contract=repository.address,
            key_bits=args.key_bits,
            min_contributors=args.min_contributors,
            noise_multiplier=args.noise_multiplier,
            budget=args.budget,
            delta=DELTA,
        )
        print(state.record.fingerprint)
        return 0
    fingerprint = None if args.fingerprint is None else check_fingerprint(args.fingerprint)
    state = CapsuleState.open(
        args.data, fingerprint=fingerprint, chain_id=chain_id, contract=repository.address
    )
    store = DirectoryStore(args.store) if args.store else IpfsStore(args.ipfs_api)
    capsule = Capsule(repository, store, state, insecure_seed=args.insecure_seed)
    server = CapsuleServer(capsule, args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ready = {"url": server.url, "pid": os.getpid(), "fingerprint": capsule.fingerprint}
    print(json.dumps(ready), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
