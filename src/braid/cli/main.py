"""`braid` command line: one module per subcommand, each with add_parser(subparsers)."""

from __future__ import annotations

import argparse
import sys

from braid import __version__

from . import daemon, keys, lab, status, top


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="braid", description="Multipath bonding tunnel.")
    parser.add_argument("--version", action="version", version=f"braid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (keys, daemon, status, top, lab):
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
