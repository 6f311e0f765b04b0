"""`braid top`: a live view of a running daemon, refreshed once a second, 80 columns wide.

One row per link: state per direction (receive/send), role, rate now (sent + received)
and a sparkline of the last 60 s, capacity estimate, RTT, loss and share of the traffic;
then the tunnel's totals and the last events. `q` or Ctrl-C quits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from braid.control.server import request

from .status import DEFAULT_SOCKETS

HISTORY = 60  # seconds of rate kept per link
SPARK_WIDTH = 20  # characters: each is 3 s of the last 60
BARS = "▁▂▃▄▅▆▇█"
SPARK_FLOOR = 100e3  # bits/s: the full bar's least height (probes alone stay at the bottom)
SHORT_STATE = {"up": "up", "suspect": "sus", "down": "DOWN"}
STATE_STYLE = {"up": "green", "sus": "yellow", "DOWN": "red"}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("top", help="live view of a running daemon (q quits)",
                       description="Refreshes once a second: per link its state per direction, "
                       "rate and a sparkline of the last 60 s, capacity, RTT, loss and share; the "
                       "tunnel's totals; the last events. q or Ctrl-C quits.")
    p.add_argument("-s", "--socket", help="control socket (default: the client's, else the gateway's)")
    p.add_argument("-n", "--iterations", type=int, default=0, help="stop after N refreshes (0: never)")
    p.set_defaults(func=top)


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    """The last values as `width` bars scaled to their maximum (each bar: the mean of its
    slice of the history); blank where there is no history yet."""
    if not values:
        return " " * width
    per = max(1, HISTORY // width)
    slices = [values[max(0, len(values) - (width - i) * per): len(values) - (width - 1 - i) * per]
              for i in range(width)]
    means = [sum(s) / len(s) if s else None for s in slices]
    top = max(max((m for m in means if m is not None), default=0.0), SPARK_FLOOR)
    return "".join(" " if m is None else BARS[min(len(BARS) - 1, int(m / top * (len(BARS) - 1) + 0.5))]
                   for m in means)


def _mbit(bps: float) -> str:
    value = bps / 1e6
    return f"{value:6.1f}" if value < 1000 else f"{value:6.0f}"


class View:
    """Keeps each link's rate history between refreshes and renders one screen."""

    def __init__(self) -> None:
        self.history: dict[str, deque[float]] = {}

    def update(self, reply: dict[str, Any]) -> None:
        seen = set()
        for peer in reply.get("peers", []):
            for link in peer["links"]:
                key = f"{peer['peer']}/{link['name']}"
                seen.add(key)
                rate = link["tx_throughput"]["current_bps"] + link["rx_throughput"]["current_bps"]
                self.history.setdefault(key, deque(maxlen=HISTORY)).append(rate)
        for key in [k for k in self.history if k not in seen]:
            del self.history[key]

    def lines(self, reply: dict[str, Any], width: int = 80) -> list[tuple[str, str]]:
        """(text, style) per line, each at most `width` columns."""
        out: list[tuple[str, str]] = []
        head = f"braid {reply['role']}  tun {reply['tun']}  up {int(reply['uptime_s'])} s"
        if "handshake" in reply:
            head += f"  handshake {reply['handshake']}"
        out.append((head[:width - 9].ljust(width - 9) + time.strftime("%H:%M:%S"), "bold"))
        out.append((f" {'link':<9} {'rx/tx':<8} {'role':<8} {'Mbit/s':>6}  {'last 60 s':<{SPARK_WIDTH}} "
                    f"{'cap':>6} {'rtt':>5} {'loss':>4} {'shr':>4}", "dim"))
        tx_total = rx_total = 0.0
        for peer in reply.get("peers", []):
            if reply["role"] == "gateway":
                out.append((f" {peer['peer']}" + ("" if peer.get("established") else " (no session)"),
                            "bold"))
            for link in peer["links"]:
                key = f"{peer['peer']}/{link['name']}"
                rx_s = SHORT_STATE.get(link.get("state_rx", link["state"]), "?")
                tx_s = SHORT_STATE.get(link.get("state_tx", link["state"]), "?")
                now = link["tx_throughput"]["current_bps"] + link["rx_throughput"]["current_bps"]
                tx_total += link["tx_throughput"]["current_bps"]
                rx_total += link["rx_throughput"]["current_bps"]
                rtt = "-" if link["rtt_ms"] is None else f"{link['rtt_ms']:.0f}"
                role = ("standby" if link.get("standby") else link.get("role", "primary")) + (
                    "*" if link.get("warming") else "")
                text = (f" {link['name'][:9]:<9} {rx_s + '/' + tx_s:<8} {role[:8]:<8} {_mbit(now)}  "
                        f"{sparkline(list(self.history.get(key, ())))} {_mbit(link['capacity_bps'])} "
                        f"{rtt:>5} {link['loss'] * 100:4.1f} {link['share']:4.2f}")
                worst = max((rx_s, tx_s), key=lambda s: ("up", "sus", "DOWN").index(s)
                            if s in ("up", "sus", "DOWN") else 3)
                out.append((text[:width], STATE_STYLE.get(worst, "")))
        c = reply.get("counters", {})
        peer_c: dict[str, int] = {}
        for peer in reply.get("peers", []):
            for k, v in peer.get("counters", {}).items():
                peer_c[k] = peer_c.get(k, 0) + v
        out.append((f" total  tx {tx_total / 1e6:.1f}  rx {rx_total / 1e6:.1f} Mbit/s  resent "
                    f"{peer_c.get('resent', 0)}  drops {peer_c.get('queue_drops', 0)}  forged "
                    f"{peer_c.get('forged', 0)}  errors {c.get('internal_errors', 0)}"[:width], ""))
        out.append((" events", "dim"))
        for event in reply.get("events", [])[-6:]:
            stamp = time.strftime("%H:%M:%S", time.localtime(event["t"]))
            out.append((f"  {stamp} {event['event']}"[:width], ""))
        return out


@contextlib.contextmanager
def _keys() -> Iterator[bool]:
    """The terminal in cbreak mode (keys without Enter), if stdin is one."""
    if not sys.stdin.isatty():
        yield False
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def _quit_pressed(timeout: float, keys: bool) -> bool:
    if not keys:
        time.sleep(timeout)
        return False
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    return bool(ready) and os.read(sys.stdin.fileno(), 32).lower().startswith(b"q")


def top(args: argparse.Namespace) -> int:
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    paths = [args.socket] if args.socket else [p for p in DEFAULT_SOCKETS if os.path.exists(p)]
    if not paths:
        print("braid top: no control socket found (is a daemon running? use --socket)", file=sys.stderr)
        return 1
    view = View()
    console = Console()
    width = min(console.width, 120)

    def screen() -> Group:
        try:
            reply = request(paths[0], {"cmd": "status"})
        except (OSError, ValueError) as exc:
            return Group(Text(f"braid top: {paths[0]}: {exc} (retrying)", style="red"))
        view.update(reply)
        return Group(*(Text(text, style=style) for text, style in view.lines(reply, width)))

    n = 0
    try:
        with _keys() as keys, Live(screen(), console=console, auto_refresh=False, screen=False) as live:
            while not args.iterations or n < args.iterations - 1:
                if _quit_pressed(1.0, keys):
                    break
                live.update(screen(), refresh=True)
                n += 1
    except KeyboardInterrupt:
        pass
    return 0
