"""`braid lab ...`: emulated uplinks, scenarios, results (see braid.lab)."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="run scenarios over emulated uplinks")
    p.set_defaults(func=lambda args: p.print_help() or 2)
