"""Userspace link emulator (the kernel here has no netem).

Runs in the lab's middle namespace. For each link it bridges two veth ends with AF_PACKET
sockets; each direction is a `Pipe`: random loss, a bottleneck of `rate` bit/s whose
FIFO buffer holds `queue_ms` of traffic (tail drop), then a one-way delay plus a random
jitter in [0, jitter] that never reorders (FIFO kept). Rates count IP bytes.

Shaper "tbf" (`braid lab --shaper tbf`): the rate and its queue are the kernel's tbf on
this namespace's egress veths instead (each direction's pipe then only loses, delays and
jitters; the lab adds the qdiscs, and rate or queue events are applied to them with `tc`),
so braid is measured against both shapers' behaviour.

Commands arrive as lines on stdin: `start` (time zero of the event timeline), `reset`
(back to the configured links, timeline stopped), `stats` (one JSON line on stdout), `quit`.
While started, one JSON sample line per 100 ms gives the bytes forwarded per link and direction.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from braid.lab.scenario import read_trace, trace_rate_bps

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("qq")
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
ETH_HEADER = 14
EARLY = 0.0005  # release up to 0.5 ms early: epoll wakes up to 1 ms late, so errors average out
SAMPLE = 0.1


@dataclass
class PipeConfig:
    rate_bps: float
    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    queue: float = 0.05
    up: bool = True
    trace: list[int] | None = None  # bytes allowed per ms, cycled (variable-rate links)


@dataclass
class Pipe:
    """One direction of one link: pure model, time and randomness passed in."""

    config: PipeConfig
    busy_until: float = 0.0
    last_release: float = 0.0
    queue: deque = field(default_factory=deque)
    forwarded_bytes: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_down: int = 0
    late_max: float = 0.0
    late_sum: float = 0.0
    late_count: int = 0

    def _rate(self, t: float, t0: float) -> float:
        trace = self.config.trace
        if trace:
            return trace_rate_bps(trace, int((t - t0) * 1000))
        return self.config.rate_bps

    def offer(self, frame: bytes, now: float, rng: random.Random, t0: float = 0.0) -> bool:
        cfg = self.config
        if not cfg.up:
            self.dropped_down += 1
            return False
        if cfg.loss and rng.random() < cfg.loss:
            self.dropped_loss += 1
            return False
        size = len(frame) - ETH_HEADER
        start = self.busy_until if self.busy_until > now else now
        rate = self._rate(start, t0)
        if (start - now) > cfg.queue + 1e-9:
            self.dropped_queue += 1
            return False
        self.busy_until = start + size * 8 / rate
        release = self.busy_until + cfg.delay + (rng.random() * cfg.jitter if cfg.jitter else 0.0)
        if release < self.last_release:
            release = self.last_release
        self.last_release = release
        self.queue.append((release, frame))
        return True

    def due(self, now: float) -> list[bytes]:
        out = []
        q = self.queue
        while q and q[0][0] <= now + EARLY:
            release, frame = q.popleft()
            late = now - release
            if late > self.late_max:
                self.late_max = late
            if late > 0:
                self.late_sum += late
            self.late_count += 1
            self.forwarded_bytes += len(frame) - ETH_HEADER
            out.append(frame)
        return out

    def next_release(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def set_down(self) -> None:
        self.config.up = False
        self.queue.clear()  # an outage loses what was on the wire
        self.busy_until = 0.0


UNSHAPED_BPS = 100e9  # a pipe's rate when tbf shapes the link: nothing queues in the pipe
TBF_BURST_S = 0.001  # tbf's bucket: this long at the link's rate (at least two full frames)


def pipe_config(spec: dict, direction: str, shaper: str = "emulator") -> PipeConfig:
    rate = spec[f"{direction}_mbit"] * 1e6
    queue = spec["queue_ms"] / 1000
    if shaper == "tbf":
        rate, queue = UNSHAPED_BPS, 10.0
    return PipeConfig(rate_bps=rate, delay=spec["delay_ms"] / 1000, jitter=spec["jitter_ms"] / 1000,
                      loss=spec["loss"], queue=queue, trace=spec.get("trace_bytes"))


def tbf_args(rate_mbit: float, queue_ms: float) -> list[str]:
    """tc's arguments for a tbf of this rate whose queue holds `queue_ms` of it; it counts
    IP bytes as the emulator does (the size table takes the Ethernet header off)."""
    burst = max(3028, int(rate_mbit * 1e6 / 8 * TBF_BURST_S))
    return ["stab", "overhead", "-14", "tbf", "rate", f"{rate_mbit}mbit", "burst", str(burst),
            "latency", f"{queue_ms}ms"]


def egress_of(link: dict, direction: str) -> str:
    """The veth a direction's frames leave the emulator by (toward the gateway when up)."""
    return link["gw_if"] if direction == "up" else link["site_if"]


def apply_changes(pipes: dict[str, Pipe], changes: dict, shaper: str = "emulator") -> None:
    """A scenario event on one link's pipes (in tbf mode, rates and queues are tbf's)."""
    if shaper == "tbf":
        changes = {k: v for k, v in changes.items()
                   if k not in ("rate_mbit", "up_mbit", "down_mbit", "queue_ms")}
    for direction, pipe in pipes.items():
        cfg = pipe.config
        if "up" in changes:
            if changes["up"]:
                cfg.up = True
            else:
                pipe.set_down()
        if "rate_mbit" in changes:
            cfg.rate_bps = changes["rate_mbit"] * 1e6
        if f"{direction}_mbit" in changes:
            cfg.rate_bps = changes[f"{direction}_mbit"] * 1e6
        if "delay_ms" in changes:
            cfg.delay = changes["delay_ms"] / 1000
        if "jitter_ms" in changes:
            cfg.jitter = changes["jitter_ms"] / 1000
        if "loss" in changes:
            cfg.loss = changes["loss"]
        if "queue_ms" in changes:
            cfg.queue = changes["queue_ms"] / 1000


class Emulator:
    """The I/O shell: AF_PACKET sockets, one epoll, commands on stdin."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.shaper = spec.get("shaper", "emulator")
        self.shaped = {link["name"]: dict(link) for link in spec["links"]}  # tbf's settings now
        self.rng = random.Random(spec.get("seed", 1))
        self.epoll = select.epoll()
        self.socks: dict[int, tuple[socket.socket, str, str]] = {}  # fd -> (sock, link, direction in)
        self.out: dict[tuple[str, str], socket.socket] = {}
        self.pipes: dict[str, dict[str, Pipe]] = {}
        for link in spec["links"]:
            name = link["name"]
            site = self._open(link["site_if"])
            gw = self._open(link["gw_if"])
            self.socks[site.fileno()] = (site, name, "up")
            self.socks[gw.fileno()] = (gw, name, "down")
            self.out[(name, "up")] = gw
            self.out[(name, "down")] = site
        self.reset()
        self.t0: float | None = None
        self.events = list(spec.get("events", []))
        self.next_event = 0
        self.next_sample = 0.0
        self.last_sample: dict[str, int] = {}
        os.set_blocking(sys.stdin.fileno(), False)
        self.epoll.register(sys.stdin.fileno(), select.EPOLLIN)
        self.stdin_buf = b""
        self.wall_offset = time.time() - time.monotonic()  # kernel stamps are wall clock

    def _open(self, ifname: str) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.bind((ifname, 0))
        # time each frame by when the kernel got it, so a late read (the emulator was not
        # scheduled) does not cost the emulated link any capacity
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        self.epoll.register(sock.fileno(), select.EPOLLIN)
        return sock

    def reset(self) -> None:
        old = self.pipes
        self.pipes = {}
        for link in self.spec["links"]:
            pipes = {d: Pipe(pipe_config(link, d, self.shaper)) for d in ("up", "down")}
            if link["name"] in old:  # keep counters across a reset
                for d, p in pipes.items():
                    o = old[link["name"]][d]
                    p.forwarded_bytes, p.dropped_loss = o.forwarded_bytes, o.dropped_loss
                    p.dropped_queue, p.dropped_down = o.dropped_queue, o.dropped_down
            self.pipes[link["name"]] = pipes
        self.t0 = None
        if self.shaper == "tbf":
            for link in self.spec["links"]:
                self._shape(link["name"], link)

    def _shape(self, name: str, changes: dict) -> None:
        """Set the link's tbf qdiscs to the rates and queue `changes` names (tbf mode)."""
        shaped = self.shaped[name]
        if "rate_mbit" in changes:
            changes = {**changes, "up_mbit": changes["rate_mbit"], "down_mbit": changes["rate_mbit"]}
        keys = {k for k in ("up_mbit", "down_mbit", "queue_ms") if k in changes}
        if not keys:
            return
        shaped.update({k: changes[k] for k in keys})
        for direction in ("up", "down"):
            if keys & {f"{direction}_mbit", "queue_ms"}:
                subprocess.run(["tc", "qdisc", "replace", "dev", egress_of(shaped, direction), "root",
                                *tbf_args(shaped[f"{direction}_mbit"], shaped["queue_ms"])],
                               check=False, capture_output=True)

    def stats(self) -> dict:
        out = {}
        for name, pipes in self.pipes.items():
            for d, p in pipes.items():
                out[f"{name}/{d}"] = {
                    "bytes": p.forwarded_bytes, "loss_drops": p.dropped_loss,
                    "queue_drops": p.dropped_queue, "down_drops": p.dropped_down,
                    "late_max_ms": round(p.late_max * 1000, 3),
                    "late_mean_ms": round(p.late_sum / p.late_count * 1000, 3) if p.late_count else 0.0}
        return out

    def _command(self, line: str, now: float) -> bool:
        if line == "start":
            self.t0 = now
            self.next_event = 0
            self.next_sample = now + SAMPLE
            self.last_sample = {k: v["bytes"] for k, v in self.stats().items()}
        elif line == "reset":
            self.reset()
        elif line == "stats":
            self._emit({"stats": self.stats()})
        elif line == "quit":
            return False
        return True

    def _emit(self, obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def _timeline(self, now: float) -> None:
        if self.t0 is None:
            return
        while self.next_event < len(self.events) and now >= self.t0 + self.events[self.next_event]["at_s"]:
            ev = self.events[self.next_event]
            apply_changes(self.pipes[ev["link"]], ev["set"], self.shaper)
            if self.shaper == "tbf":
                self._shape(ev["link"], ev["set"])
            self._emit({"event": ev, "t": round(now - self.t0, 3)})
            self.next_event += 1
        if now >= self.next_sample:
            current = {k: v["bytes"] for k, v in self.stats().items()}
            span = SAMPLE + (now - self.next_sample)
            rates = {k: round((current[k] - self.last_sample.get(k, 0)) * 8 / span / 1e6, 3) for k in current}
            self._emit({"t": round(now - self.t0, 3), "mbit": rates})
            self.last_sample = current
            self.next_sample += SAMPLE
            if self.next_sample < now:
                self.next_sample = now + SAMPLE

    def _deadline(self) -> float:
        deadline = float("inf")
        for pipes in self.pipes.values():
            for p in pipes.values():
                r = p.next_release()
                if r is not None and r < deadline:
                    deadline = r
        if self.t0 is not None:
            deadline = min(deadline, self.next_sample)
            if self.next_event < len(self.events):
                deadline = min(deadline, self.t0 + self.events[self.next_event]["at_s"])
        return deadline

    def run(self) -> None:
        monotonic = time.monotonic
        running = True
        stdin_fd = sys.stdin.fileno()
        while running:
            timeout = self._deadline() - monotonic() - EARLY
            events = self.epoll.poll(min(max(timeout, 0), 0.5))
            now = monotonic()
            for fd, _ in events:
                if fd == stdin_fd:
                    data = os.read(stdin_fd, 4096)
                    if not data:
                        running = False
                        break
                    self.stdin_buf += data
                    while b"\n" in self.stdin_buf:
                        line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
                        running = self._command(line.decode().strip(), now) and running
                    continue
                sock, name, direction = self.socks[fd]
                pipe = self.pipes[name][direction]
                t0 = self.t0 or 0.0
                for _ in range(64):
                    try:
                        frame, anc, _, addr = sock.recvmsg(65535, 64)
                    except BlockingIOError:
                        break
                    if addr[2] == PACKET_OUTGOING:
                        continue
                    arrived = now
                    if anc:
                        sec, nsec = TIMESPEC.unpack_from(anc[0][2])
                        arrived = min(now, sec + nsec * 1e-9 - self.wall_offset)
                    pipe.offer(frame, arrived, self.rng, t0)
            now = monotonic()
            self._timeline(now)
            for (name, direction), out in self.out.items():
                for frame in self.pipes[name][direction].due(now):
                    with contextlib.suppress(OSError):
                        out.send(frame)


def main() -> None:
    spec = json.loads(sys.argv[1])
    for link in spec["links"]:
        if link.get("trace"):
            link["trace_bytes"] = read_trace(link["trace"])
    Emulator(spec).run()


if __name__ == "__main__":
    main()
