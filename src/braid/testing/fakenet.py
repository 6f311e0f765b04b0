"""A seeded fake network in virtual time: per link rate, delay, jitter, loss, duplication,
reordering and outages, carrying datagrams between a ClientCore and a GatewayCore."""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import random
from dataclasses import dataclass, field

from braid.core.client import ClientCore, ClientParams
from braid.core.gateway import ClientEntry, GatewayCore, GatewayParams
from braid.core.link import LinkConfig
from braid.core.noise import public_key


@dataclass
class FakeLink:
    rate_bps: float = 10e6
    delay: float = 0.010
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # probability a datagram skips the FIFO and gets extra delay
    queue: float = 0.100  # seconds of buffer at rate
    up: bool = True
    cut: set[str] = field(default_factory=set)  # directions ("up", "down") that lose everything
    busy_until: dict[str, float] = field(default_factory=lambda: {"up": 0.0, "down": 0.0})
    last_arrival: dict[str, float] = field(default_factory=lambda: {"up": 0.0, "down": 0.0})


class FakeNet:
    """Runs a client core and a gateway core against each other over FakeLinks."""

    def __init__(self, links: dict[str, FakeLink], seed: int = 1, client_name: str = "site",
                 warmup: bool = True, roles: dict[str, str] | None = None) -> None:
        self._roles = roles or {}
        self.rng = random.Random(seed)
        self.links = links
        self.names = list(links)
        self.now = 0.0
        self._events: list[tuple[float, int, str, int, bytes]] = []
        self._tie = itertools.count()
        self._gw_key, self._cl_key = self._bytes(32), self._bytes(32)
        self._entry = ClientEntry(client_name, public_key(self._cl_key),
                                  (ipaddress.ip_network("10.77.0.2/32"),
                                   ipaddress.ip_network("fd77::2/128")))
        self._warmup = warmup
        self.gateway = self._new_gateway()
        self.client = self._new_client()
        self.to_gateway: list[bytes] = []  # delivered to the gateway's TUN
        self.to_client: list[bytes] = []
        self.sent = {"up": 0, "down": 0}
        self.wire_bytes: dict[tuple[str, str], int] = {}  # (link, direction) -> bytes offered
        # a client that forges its source: link id -> the address its datagrams claim
        self.spoof: dict[int, tuple[str, int]] = {}
        self.received_from: dict[tuple[str, int], int] = {}  # bytes the gateway got per source
        self.sent_elsewhere: dict[tuple[str, int], int] = {}  # bytes to addresses not the client's
        self.dropped = {"up": 0, "down": 0}

    @property
    def gateway_public(self) -> bytes:
        return public_key(self._gw_key)

    def _new_gateway(self) -> GatewayCore:
        params = GatewayParams(self._gw_key, (self._entry,), warmup=self._warmup)
        return GatewayCore(params, self.now, random=self._bytes)

    def _new_client(self, wall_offset: float = 1.7e9, wall_floor_us: int = 0) -> ClientCore:
        cfg = tuple(LinkConfig(n, i, role=self._roles.get(n, "primary")) for i, n in enumerate(self.names))
        params = ClientParams(self._cl_key, public_key(self._gw_key), cfg, warmup=self._warmup)
        return ClientCore(params, self.now, random=self._bytes, wall_offset=wall_offset,
                          wall_floor_us=wall_floor_us)

    def restart_gateway(self) -> None:
        """The gateway process dies and starts again: all its state is lost, the keys kept."""
        self.gateway = self._new_gateway()

    def restart_client(self, clock_back: float = 0.0, keep_state: bool = False) -> None:
        """The client process starts again, its wall clock `clock_back` seconds behind the
        one it had; `keep_state`: with the last handshake timestamp it had saved."""
        floor = self.client.last_wall_us if keep_state else 0
        self.client = self._new_client(1.7e9 - clock_back, floor)

    def _bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def _addr(self, link_id: int) -> tuple[str, int]:
        return (f"192.0.2.{link_id + 1}", 40000 + link_id)

    def _transmit(self, direction: str, link_id: int, data: bytes) -> None:
        link = self.links[self.names[link_id]]
        self.sent[direction] += 1
        key = (self.names[link_id], direction)
        self.wire_bytes[key] = self.wire_bytes.get(key, 0) + len(data) + 28  # IPv4 + UDP
        if not link.up or direction in link.cut or self.rng.random() < link.loss:
            self.dropped[direction] += 1
            return
        start = max(self.now, link.busy_until[direction])
        if start - self.now > link.queue:
            self.dropped[direction] += 1
            return
        done = start + (len(data) + 28) * 8 / link.rate_bps
        link.busy_until[direction] = done
        arrival = done + link.delay + self.rng.random() * link.jitter
        if self.rng.random() < link.reorder:
            arrival += 0.02
        else:
            arrival = max(arrival, link.last_arrival[direction])
            link.last_arrival[direction] = arrival
        copies = 2 if self.rng.random() < link.duplicate else 1
        for _ in range(copies):
            heapq.heappush(self._events, (arrival, next(self._tie), direction, link_id, data))

    def _flush(self) -> None:
        for dg in self.client.datagrams_to_send(self.now):
            self._transmit("up", dg.link_id, dg.data)
        for dg in self.gateway.datagrams_to_send(self.now):
            assert dg.addr is not None
            if dg.addr != self._addr(dg.link_id):  # to a spoofed source: never reaches the client
                self.sent_elsewhere[dg.addr] = self.sent_elsewhere.get(dg.addr, 0) + len(dg.data)
                continue
            self._transmit("down", dg.link_id, dg.data)
        self.to_gateway.extend(self.gateway.packets_to_deliver())
        self.to_client.extend(self.client.packets_to_deliver())

    def run_until(self, t_end: float) -> None:
        stuck = 0
        while True:
            self._flush()
            nxt = min(self.client.next_deadline(), self.gateway.next_deadline(), t_end)
            if self._events and self._events[0][0] <= nxt:
                t, _, direction, link_id, data = heapq.heappop(self._events)
                self.now = max(self.now, t)
                if direction == "up":
                    src = self.spoof.get(link_id, self._addr(link_id))
                    self.received_from[src] = self.received_from.get(src, 0) + len(data)
                    self.gateway.on_datagram(src, data, self.now)
                else:
                    self.client.on_datagram(link_id, data, self.now)
                continue
            if nxt <= self.now:
                stuck += 1
                if stuck > 10_000:
                    raise RuntimeError(f"a core's deadline does not advance at t={self.now}")
            else:
                stuck = 0
            self.now = max(self.now, nxt)
            if self.now >= t_end:
                self._flush()
                return
            self.client.on_timer(self.now)
            self.gateway.on_timer(self.now)

    def send_up(self, packet: bytes) -> None:
        self.client.on_tun_packet(packet, self.now)

    def send_down(self, packet: bytes) -> None:
        self.gateway.on_tun_packet(packet, self.now)
