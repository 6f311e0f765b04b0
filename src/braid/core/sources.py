"""Where the gateway sends a client's datagrams: the source addresses authenticated traffic
came from, per link, and QUIC's anti-amplification rule for them (RFC 9000 section 8.1).

An address is learnt only from a datagram that authenticated, but a client holding its key
can still forge the source address, to make the gateway send to a victim. So an address is
*unvalidated* until a datagram from the client echoes the random token the gateway sent to
that address (only a receiver there could know it; the echo may come from any address).
Until then the gateway sends it at most AMPLIFICATION_LIMIT times the bytes it received
from it, everything included (data, padding, probes, the challenge itself).

A few addresses per link are kept (several sockets per link, NAT rebinding), the most
recently heard win; updates are O(1) in the number of links.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .timers import CHALLENGE_RETRY, CHALLENGE_RETRY_MAX, SOURCE_FRESH, SOURCE_REFRESH

AMPLIFICATION_LIMIT = 3  # bytes sent per byte received, to an address not yet validated
TRAFFIC_LIMIT = 2  # ... of which data, padding and probes may take this much: the rest is kept
# for challenges (padding once used it all, and a satellite's address was never validated)
MAX_SOURCES = 4  # addresses remembered per link
MAX_TOKENS = 4  # outstanding challenges per address that an echo may answer
TOKEN_LEN = 8

Address = tuple  # a socket address as the OS gives it
Random = Callable[[int], bytes]


@dataclass(slots=True)
class Source:
    heard: float
    rx_bytes: int = 0
    tx_bytes: int = 0
    validated: bool = False
    tokens: list[bytes] = field(default_factory=list)  # outstanding, newest last (a few kept:
    challenged: float = -1.0  # an echo may take longer than the retry, on a satellite)
    retry: float = CHALLENGE_RETRY

    def may_send(self, size: int, limit: float = AMPLIFICATION_LIMIT) -> bool:
        return self.validated or self.tx_bytes + size <= limit * self.rx_bytes


class Sources:
    def __init__(self, random: Random) -> None:
        self._random = random
        self._by_link: dict[int, dict[Address, Source]] = {}
        self._fresh: dict[int, list[Address]] = {}
        self._fresh_at: dict[int, float] = {}
        self._rr: dict[int, int] = {}
        self.limited = 0  # datagrams not sent: no address of the link had budget

    def addresses(self, link_id: int) -> list[Address]:
        return list(self._by_link.get(link_id, {}))

    def forget_link(self, link_id: int) -> None:
        """The link was removed: its addresses are no longer the peer's."""
        for table in (self._by_link, self._fresh, self._fresh_at, self._rr):
            table.pop(link_id, None)

    def validated(self, addr: Address) -> bool:
        return any(s.validated for srcs in self._by_link.values()
                   for a, s in srcs.items() if a == addr)

    def learn(self, link_id: int, addr: Address, size: int, now: float) -> None:
        """An authenticated datagram of `size` bytes came from addr on this link."""
        sources = self._by_link.setdefault(link_id, {})
        source = sources.get(addr)
        if source is None:
            if len(sources) >= MAX_SOURCES:
                del sources[min(sources, key=lambda a: sources[a].heard)]
            source = sources[addr] = Source(now)
            self._fresh_at[link_id] = -1.0  # recompute now
        source.heard = now
        source.rx_bytes += size
        if now - self._fresh_at.get(link_id, -1.0) >= SOURCE_REFRESH:
            self._fresh_at[link_id] = now
            newest = max(s.heard for s in sources.values())
            self._fresh[link_id] = [a for a, s in sources.items() if s.heard >= newest - SOURCE_FRESH]

    def pick(self, link_id: int, size: int) -> Address | None:
        """The next address in use for this link that may be sent `size` bytes (round robin
        over the link's sockets); None if none may."""
        fresh = self._fresh.get(link_id)
        if not fresh:
            return None
        sources = self._by_link[link_id]
        start = self._rr.get(link_id, 0)
        for k in range(len(fresh)):
            addr = fresh[(start + k) % len(fresh)]
            source = sources.get(addr)
            if source is not None and source.may_send(size, TRAFFIC_LIMIT):
                self._rr[link_id] = start + k + 1
                source.tx_bytes += size
                return addr
        self.limited += 1
        return None

    def challenges(self, now: float) -> list[tuple[int, Address, bytes]]:
        """(link, address, token) for each unvalidated address in use that is due a
        challenge; the caller sends each (within the address's budget, via `pick_exact`)."""
        out = []
        for link_id, fresh in self._fresh.items():
            sources = self._by_link[link_id]
            for addr in fresh:
                source = sources.get(addr)
                if source is None or source.validated or now - source.challenged < source.retry:
                    continue
                if source.challenged >= 0:  # unanswered: wait twice as long next time
                    source.retry = min(CHALLENGE_RETRY_MAX, 2 * source.retry)
                token = self._random(TOKEN_LEN)
                source.tokens = [*source.tokens[-(MAX_TOKENS - 1):], token]
                source.challenged = now
                out.append((link_id, addr, token))
        return out

    def charge(self, link_id: int, addr: Address, size: int) -> bool:
        """Count `size` bytes about to be sent to addr; False (nothing counted) if over budget."""
        source = self._by_link.get(link_id, {}).get(addr)
        if source is None or not source.may_send(size):
            self.limited += 1
            return False
        source.tx_bytes += size
        return True

    def on_echo(self, token: bytes) -> list[int]:
        """A datagram from the client echoed `token`: the address it was sent to receives.
        Returns the links that got their first validated address."""
        first = []
        for link_id, sources in self._by_link.items():
            for source in sources.values():
                if token in source.tokens:
                    if not any(s.validated for s in sources.values()):
                        first.append(link_id)
                    source.validated = True
                    source.tokens = []
        return first
