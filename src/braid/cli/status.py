"""`braid status [--json]`: ask a running daemon over its unix socket."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from typing import Any

from braid.control.server import request

DEFAULT_SOCKETS = ("/run/braid/client.sock", "/run/braid/gateway.sock")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show a running daemon's links and counters")
    p.add_argument("-s", "--socket", help="control socket (default: the client's, else the gateway's)")
    p.add_argument("--json", action="store_true", help="print the raw JSON reply")
    p.set_defaults(func=status)
    p = sub.add_parser("reload", help="make a running daemon re-read its config (as SIGHUP does)",
                       description="The gateway applies added, removed and changed clients without "
                       "touching the others; the client checks its file and names what needs a "
                       "restart. An invalid file leaves the running config and says why.")
    p.add_argument("-s", "--socket", help="control socket (default: the client's, else the gateway's)")
    p.set_defaults(func=reload)


def _mbit(bps: float) -> str:
    return f"{bps / 1e6:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _rates(t: dict[str, float]) -> str:
    return "/".join(_mbit(t[k]) for k in ("current_bps", "avg_bps", "max_bps"))


def redundancy(peer: dict[str, Any]) -> str:
    """What the peer's copies cost: realtime packets and NACKed resends sent twice because
    their link is lossy (the links marked "copied" now)."""
    c = peer["counters"]
    copied = [link["name"] for link in peer["links"] if link.get("copying")]
    now = ", ".join(copied) if copied else "no link lossy"
    return (f"  redundancy: {now}; realtime copies {c.get('duplicated', 0)} "
            f"({c.get('duplicated_bytes', 0) / 1e3:.0f} kB), resend copies "
            f"{c.get('resend_copies', 0)} ({c.get('resend_copy_bytes', 0) / 1e3:.0f} kB)")


def lines(reply: dict[str, Any], width: int = 80) -> list[str]:
    """The status as lines of at most `width` columns: a block per link."""
    head = f"{reply['role']}  tun {reply['tun']}  mtu {reply['mtu']}  up {reply['uptime_s']} s"
    if "handshake" in reply:
        head += f"  handshake {reply['handshake']}"
    out = [head]
    for peer in reply["peers"]:
        out.append(f"peer {peer['peer']}" + ("" if peer.get("established", True) else " (no session)"))
        for link in peer["links"]:
            state = link["state"] + (" (warm-up)" if link.get("warming") else "")
            where = f"  from {link['local_address']}" if link.get("local_address") else ""
            if link.get("addresses"):
                where = "  at " + ", ".join(link["addresses"][:2])
            out.append(f"  {link['name']}: {state} (rx {link.get('state_rx', '-')}, tx "
                       f"{link.get('state_tx', '-')}){where}")
            copying = " (copied)" if link.get("copying") else ""
            out.append(f"    rtt {_ms(link['rtt_ms'])} (min {_ms(link['min_rtt_ms'])})  loss "
                       f"{link['loss'] * 100:.2f} %{copying}  queue {_ms(link['queue_delay_ms'])}  "
                       f"share {link['share']:.2f}")
            out.append(f"    capacity {_mbit(link['capacity_bps'])}  pacing {_mbit(link['pacing_bps'])} "
                       f" Mbit/s")
            out.append(f"    tx {_rates(link['tx_throughput'])}  rx {_rates(link['rx_throughput'])} "
                       "Mbit/s (now/avg/max)")
        out.append(redundancy(peer))
        out += textwrap.wrap("counters: " + ", ".join(f"{k}={v}" for k, v in peer["counters"].items()),
                             width, subsequent_indent="  ")
    out += textwrap.wrap("daemon: " + ", ".join(f"{k}={v}" for k, v in reply["counters"].items()),
                         width, subsequent_indent="  ")
    return [line[:width] for line in out]


def render(reply: dict[str, Any]) -> None:
    for line in lines(reply):
        print(line)


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


def reload(args: argparse.Namespace) -> int:
    paths = [args.socket] if args.socket else [p for p in DEFAULT_SOCKETS if os.path.exists(p)]
    if not paths:
        print("braid reload: no control socket found (is a daemon running? use --socket)", file=sys.stderr)
        return 1
    try:
        reply = request(paths[0], {"cmd": "reload"}, timeout=10.0)
    except (OSError, ValueError) as exc:
        print(f"braid reload: {paths[0]}: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"braid reload: {reply.get('error')}", file=sys.stderr)
        return 2
    for line in reply.get("changes", []):
        print(line)
    if reply.get("needs_restart"):
        print("needs a restart: " + ", ".join(reply["needs_restart"]))
    return 0
