"""`braid status [--json]`: ask a running daemon over its unix socket."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from braid.control.server import request

DEFAULT_SOCKETS = ("/run/braid/client.sock", "/run/braid/gateway.sock")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show a running daemon's links and counters")
    p.add_argument("-s", "--socket", help="control socket (default: the client's, else the gateway's)")
    p.add_argument("--json", action="store_true", help="print the raw JSON reply")
    p.set_defaults(func=status)


def _mbit(bps: float) -> str:
    return f"{bps / 1e6:.2f}"


def render(reply: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    head = f"[bold]{reply['role']}[/] tun {reply['tun']} mtu {reply['mtu']} up {reply['uptime_s']} s"
    if "handshake" in reply:
        head += f" handshake {reply['handshake']}"
    console.print(head)
    for peer in reply["peers"]:
        table = Table(title=f"peer {peer['peer']}")
        for col in ("link", "state", "rtt ms", "min rtt", "loss %", "capacity Mbit/s", "pacing",
                    "queue ms", "share", "tx now/avg/max Mbit/s", "rx now/avg/max Mbit/s"):
            table.add_column(col)
        for link in peer["links"]:
            tx, rx = link["tx_throughput"], link["rx_throughput"]
            state = link["state"] + (" (warm-up)" if link.get("warming") else "")
            table.add_row(
                link["name"], state, str(link["rtt_ms"]), str(link["min_rtt_ms"]),
                f"{link['loss'] * 100:.2f}", _mbit(link["capacity_bps"]), _mbit(link["pacing_bps"]),
                str(link["queue_delay_ms"]), f"{link['share']:.2f}",
                "/".join(_mbit(tx[k]) for k in ("current_bps", "avg_bps", "max_bps")),
                "/".join(_mbit(rx[k]) for k in ("current_bps", "avg_bps", "max_bps")))
        console.print(table)
        console.print("counters: " + ", ".join(f"{k}={v}" for k, v in peer["counters"].items()))
    console.print("daemon: " + ", ".join(f"{k}={v}" for k, v in reply["counters"].items()))


def status(args: argparse.Namespace) -> int:
    paths = [args.socket] if args.socket else [p for p in DEFAULT_SOCKETS if os.path.exists(p)]
    if not paths:
        print("braid status: no control socket found (is a daemon running? use --socket)", file=sys.stderr)
        return 1
    try:
        reply = request(paths[0], {"cmd": "status"})
    except (OSError, ValueError) as exc:
        print(f"braid status: {paths[0]}: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"braid status: {reply.get('error')}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        render(reply)
    return 0
