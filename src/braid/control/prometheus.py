"""Prometheus text exposition (format 0.0.4) of a daemon's status, served off the data path.

Nothing is counted per packet for it: a scrape asks the event loop for the same status
snapshot `braid status --json` gets (through the control server's queue, between two
batches of datagrams) and renders it here, in the scraping thread. Names and labels are
listed in README (Metrics).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from braid import __version__

log = logging.getLogger("braid.metrics")

STATE_VALUE = {"up": 1.0, "suspect": 0.5, "down": 0.0}
# per-link figures of the status JSON: (metric, help, key in the link object, scale)
LINK_GAUGES = (
    ("braid_link_rtt_seconds", "Smoothed round-trip time", "rtt_ms", 1e-3),
    ("braid_link_min_rtt_seconds", "Windowed minimum round-trip time", "min_rtt_ms", 1e-3),
    ("braid_link_loss_ratio", "Loss of the link's datagrams over recent receiver reports", "loss", 1.0),
    ("braid_link_capacity_bps", "Capacity estimate, bits per second", "capacity_bps", 1.0),
    ("braid_link_pacing_bps", "Pacing rate, bits per second", "pacing_bps", 1.0),
    ("braid_link_delivery_bps", "Recent delivery rate reported by the peer", "delivery_bps", 1.0),
    ("braid_link_queue_delay_seconds", "Standing queue on the path", "queue_delay_ms", 1e-3),
    ("braid_link_share_ratio", "Share of the bytes sent that went on this link", "share", 1.0),
    ("braid_link_copying", "1 while realtime packets and resends on the link are sent twice "
     "(its loss is above 0.5 %)", "copying", 1.0),
)
LINK_COUNTERS = (
    ("braid_link_tx_bytes_total", "Bytes sent on the link (IP, UDP and braid headers)", "tx_bytes"),
    ("braid_link_rx_bytes_total", "Bytes received on the link", "rx_bytes"),
    ("braid_link_tx_packets_total", "Datagrams sent on the link", "tx_packets"),
    ("braid_link_rx_packets_total", "Datagrams received on the link", "rx_packets"),
)
# peer counters that are levels, not totals
GAUGE_COUNTERS = {"reorder_held", "reorder_held_bytes", "reorder_limit_bytes", "queue_room_ms"}


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: Any) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list[str] = []

    def add(self, value: float | int | None, **labels: Any) -> None:
        if value is None:
            return
        self.samples.append(f"{self.name}{_labels(**labels) if labels else ''} {float(value):.9g}")

    def render(self) -> str:
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n" + "".join(
            s + "\n" for s in self.samples)


def render(status: dict[str, Any]) -> str:
    """The exposition of one `braid status --json` snapshot."""
    role = status.get("role", "daemon")
    fams: dict[str, _Family] = {}

    def fam(name: str, kind: str, help_text: str) -> _Family:
        if name not in fams:
            fams[name] = _Family(name, kind, help_text)
        return fams[name]

    fam("braid_info", "gauge", "Always 1; the daemon's role and version").add(
        1, role=role, version=__version__)
    fam("braid_uptime_seconds", "gauge", "Seconds since the daemon started").add(status.get("uptime_s"))
    daemon = fam("braid_daemon_events_total", "counter",
                 "Daemon-wide counters: handshakes by outcome, drops by reason, errors")
    for key, value in sorted(status.get("counters", {}).items()):
        daemon.add(value, event=key)
    for peer in status.get("peers", []):
        name = peer.get("peer", "")
        fam("braid_peer_established", "gauge", "1 while the peer has transport keys").add(
            1 if peer.get("established") else 0, peer=name)
        events = fam("braid_peer_events_total", "counter",
                     "Per-peer counters: resends, drops by reason, NACKs, duplicates, fragments")
        held = fam("braid_peer_level", "gauge", "Per-peer levels (packets held for reordering)")
        for key, value in sorted(peer.get("counters", {}).items()):
            (held if key in GAUGE_COUNTERS else events).add(value, peer=name, event=key)
        for link in peer.get("links", []):
            lbl = {"peer": name, "link": link.get("name", "")}
            for direction in ("rx", "tx"):
                fam("braid_link_state", "gauge",
                    "Link health per direction: 1 up, 0.5 suspect, 0 down").add(
                    STATE_VALUE.get(link.get(f"state_{direction}", ""), 0.0), **lbl, direction=direction)
            for metric, help_text, key, scale in LINK_GAUGES:
                value = link.get(key)
                fam(metric, "gauge", help_text).add(None if value is None else value * scale, **lbl)
            for metric, help_text, key in LINK_COUNTERS:
                fam(metric, "counter", help_text).add(link.get(key), **lbl)
    return "".join(f.render() for f in fams.values())


class MetricsServer:
    """HTTP on its own thread: GET /metrics renders a status snapshot the loop made."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], dict[str, Any]]) -> None:
        snap = snapshot

        class Handler(BaseHTTPRequestHandler):
            timeout = 5.0  # a client that drips its request is dropped

            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                try:
                    body = render(snap()).encode()
                except Exception as exc:
                    log.warning("metrics scrape failed: %s", exc)
                    self.send_error(503, "status unavailable")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics: " + format, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.timeout = 1.0
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="braid-metrics",
                                        daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=2.0)
