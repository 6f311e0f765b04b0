"""`braid client -c FILE` and `braid gateway -c FILE`: run in the foreground until signalled."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from braid.config import ConfigError, load_client, load_gateway
from braid.daemon.common import setup_logging

if TYPE_CHECKING:
    from braid.daemon.client import ClientDaemon
    from braid.daemon.gateway import GatewayDaemon


def add_parsers(sub: argparse._SubParsersAction) -> None:
    for role in ("client", "gateway"):
        p = sub.add_parser(role, help=f"run the {role} in the foreground")
        p.add_argument("-c", "--config", required=True, help="TOML file")
        p.add_argument("-v", "--verbose", action="store_true")
        p.set_defaults(func=run, role=role)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    try:
        if args.role == "client":
            from braid.daemon.client import ClientDaemon

            cfg = load_client(args.config)
            make: Callable[[], ClientDaemon | GatewayDaemon] = lambda: ClientDaemon(cfg)  # noqa: E731
        else:
            from braid.daemon.gateway import GatewayDaemon

            gcfg = load_gateway(args.config)
            make = lambda: GatewayDaemon(gcfg)  # noqa: E731
    except ConfigError as exc:
        print(f"braid {args.role}: {exc}", file=sys.stderr)
        return 2
    try:
        daemon = make()
    except (OSError, RuntimeError) as exc:
        print(f"braid {args.role}: cannot start: {exc}", file=sys.stderr)
        return 1
    daemon.config_path = args.config
    try:
        daemon.run()
    finally:
        daemon.close()
        logging.getLogger("braid").info("%s stopped, everything it set up removed", args.role)
    return 0
