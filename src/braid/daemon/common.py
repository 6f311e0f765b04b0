"""Pieces shared by both daemons: TUN bring-up, status sampling, logging of core events."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from braid.control.metrics import SLICE, Throughput
from braid.control.status import link_counters, peer_status, summary_line
from braid.core.client import ClientCore
from braid.core.gateway import GatewayCore
from braid.core.session import Peer
from braid.io.netlink import InterfaceSetup, NetlinkError
from braid.io.tun import Tun
from braid.io.uplinks import describe

from .loop import EventLoop, Faults

log = logging.getLogger("braid.daemon")

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def sd_notify(state: str) -> bool:
    """Tell systemd (Type=notify) about the daemon's state: READY=1, STOPPING=1. A no-op
    outside systemd. True if sent."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
        return True
    except OSError as exc:
        log.warning("sd_notify %s to %s failed: %s", state, path, exc.strerror)
        return False


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def bring_up_tun(name: str, mtu: int, addresses: tuple[Interface, ...]) -> tuple[Tun, InterfaceSetup]:
    tun = Tun(name)
    setup = InterfaceSetup(tun.name)
    try:
        setup.up(mtu)
        for iface in addresses:
            setup.add_address(iface)
    except Exception:
        setup.teardown()
        tun.close()
        raise
    return tun, setup


RECENT_EVENTS = 20  # event lines kept for `braid status` and `braid top`
SEND_ERROR_LOG = 10.0  # seconds between two logs of one link's send errors of one kind
TUN_CHUNK = 8  # packets read from the TUN before the datagrams they made are sent (the first
# of them waits for the rest of the chunk's work: 8 large packets are ~50 datagrams, ~1 ms)
TUN_CHUNKS = 8  # chunks per wake-up (then timers and the other sockets get their turn)


def read_tun(tun: Tun, on_packet: Callable[[bytes, float], None], send: Callable[[float], None],
             now: float, faults: Faults) -> None:
    """Read the TUN in small chunks and send after each, so that the first datagrams of a
    burst do not wait for the whole burst's work; the clock is read again for each chunk,
    and the core stamps what it pulls with the reading it was given the chunk with: one
    clock for everything the core compares (its send log, the stamps the peer echoes)."""
    for _ in range(TUN_CHUNKS):
        packets = tun.read_batch(TUN_CHUNK)
        for packet in packets:
            try:
                on_packet(packet, now)
            except Exception:
                faults.record("a packet from the TUN")
        send(now)
        if len(packets) < TUN_CHUNK:
            return
        now = time.monotonic()


def clamp_forwarded_mss(setup: InterfaceSetup, whole_mtu: int, fragments: int) -> None:
    """With a TUN MTU above one datagram, clamp forwarded TCP to segments that fit one."""
    if fragments <= 1:
        return
    try:
        setup.clamp_mss(whole_mtu)
    except NetlinkError as exc:
        log.warning("forwarded TCP MSS not clamped (%s): full-size packets from other hosts "
                    "will take two datagrams each", exc)


MAX_SOCKET_WAIT = 1.0  # seconds a datagram can plausibly wait in a socket buffer


def arrival_time(stamp: float | None, offset: float, now: float) -> float:
    """A kernel arrival stamp (wall clock) on the monotonic clock, given `offset` =
    monotonic - wall clock read together; never later than `now`, the read time, nor more
    than MAX_SOCKET_WAIT before it (the wall clock was set between the arrival and the
    read: the stamp no longer tells the time, `now` is closer)."""
    if stamp is None:
        return now
    arrival = stamp + offset
    return arrival if now - MAX_SOCKET_WAIT < arrival < now else now


class StatusBook:
    """Samples per-link byte counters once a second for the throughput figures."""

    def __init__(self) -> None:
        self.tput = Throughput()
        self.next_sample = 0.0
        self.started = time.monotonic()
        self._last_counters: dict[str, int] = {}
        self._next_idle_summary = 0.0

    def maybe_sample(self, now: float, peers: list[Peer]) -> None:
        if now < self.next_sample:
            return
        self.next_sample = now + SLICE
        counters: dict[str, int] = {}
        for peer in peers:
            counters.update(link_counters(peer))
        self.tput.sample(now, counters)
        if log.isEnabledFor(logging.DEBUG):  # -v: a summary a second (every 10 s while idle)
            moved = counters != self._last_counters
            self._last_counters = counters
            if moved or now >= self._next_idle_summary:
                self._next_idle_summary = now + 10.0
                for peer in peers:
                    log.debug("%s", summary_line(peer, self.tput, now))

    def peers(self, peers: list[Peer]) -> list[dict]:
        return [peer_status(p, self.tput, time.monotonic()) for p in peers]


class DaemonBase:
    """What both daemons share: the loop, status book, delivery to the TUN, event logging,
    the status reply, and teardown of everything opened (in reverse order)."""

    role = "daemon"

    def __init__(self) -> None:
        self.loop = EventLoop()
        self.book = StatusBook()
        self.send_errors = 0
        self.config_path: str | None = None  # re-read on SIGHUP or `braid reload`
        self._send_errors_seen: dict[tuple[str, int], tuple[float, int]] = {}
        self.recent_events: deque[tuple[float, str]] = deque(maxlen=RECENT_EVENTS)
        self.tun_write_errors = 0
        self.tun_recreated = 0
        self._closers: list[Callable[[], None]] = []

    def send_error(self, link: str, exc: OSError) -> None:
        """Count a failed send; log it with its errno in words, once per link and errno per
        SEND_ERROR_LOG seconds (with how many there were)."""
        self.send_errors += 1
        key = (link, exc.errno or 0)
        now = time.monotonic()
        seen, count = self._send_errors_seen.get(key, (-1e9, 0))
        if now - seen < SEND_ERROR_LOG:
            self._send_errors_seen[key] = (seen, count + 1)
            return
        more = f" ({count} more since the last report)" if count else ""
        log.warning("link %s: send failed: %s%s", link, describe(exc), more)
        self._send_errors_seen[key] = (now, 0)

    def opened(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def reopen_tun(self, tun: Tun, setup: InterfaceSetup, on_readable: Callable[[float], None]
                   ) -> Tun:
        """The TUN was deleted from outside: make it again with the same name, MTU,
        addresses and routes, in the loop in place of the dead one (one log line)."""
        self.loop.remove(tun.fd)
        tun.close()
        new = Tun(tun.name)
        setup.restore()
        self.loop.add(new.fd, on_readable)
        self.tun_recreated += 1
        log.warning("tun %s was deleted: made again (addresses and routes put back)", new.name)
        return new

    def write_delivered(self, tun: Tun, packets: list[bytes]) -> None:
        for packet in packets:
            if not tun.write(packet):
                self.tun_write_errors += 1

    def log_events(self, core: ClientCore | GatewayCore) -> None:
        """Log every event the core has for us (one line each), and keep the last ones for
        `braid status` and `braid top`."""
        while (event := core.next_event()) is not None:
            self._event(str(event))

    def _event(self, line: str) -> None:
        log.info("%s", line)
        self.recent_events.append((round(time.time(), 1), line))

    def status_reply(self, tun: Tun, mtu: int, counters: dict[str, int], peers: list[Peer],
                     **extra: Any) -> dict[str, Any]:
        counters = dict(counters, send_errors=self.send_errors, tun_write_errors=self.tun_write_errors,
                        tun_recreated=self.tun_recreated,
                        internal_errors=self.loop.faults.count)
        return {"ok": True, "role": self.role, "tun": tun.name, "mtu": mtu, **extra,
                "uptime_s": round(time.monotonic() - self.book.started, 1),
                "counters": counters, "peers": self.book.peers(peers),
                "events": [{"t": t, "event": e} for t, e in self.recent_events]}

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()
        self.loop.close()
