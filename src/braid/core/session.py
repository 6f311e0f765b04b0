"""A tunnel peer: transport keys (sealing, replay windows, rekey limits) around a Bond.

Nonces come from counters, one counter per link per key set, so each link's counter is
also its sequence number for loss detection; the replay window is per link too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from . import wire
from .bond import Bond
from .link import LinkConfig
from .noise import Keys
from .replay import ReplayWindow
from .sources import Random, Sources
from .timers import KEEP_PREVIOUS, REJECT_AFTER_TIME, REKEY_AFTER_TIME

REKEY_AFTER_MESSAGES = 1 << 46
REJECT_AFTER_MESSAGES = wire.COUNTER_MAX
SEAL_OVERHEAD = wire.TRANSPORT_HEADER_LEN + wire.TAG_LEN  # UDP payload bytes around a plaintext

Address = tuple  # a socket address as the OS gives it


class Datagram(NamedTuple):
    link_id: int
    addr: Address | None  # None: the link's own socket(s) toward the configured endpoint
    data: bytes


def transport_nonce(link_id: int, counter: int) -> bytes:
    return b"\x00\x00\x00" + bytes((link_id,)) + struct.pack("<Q", counter)


class Keypair:
    """Transport keys of one completed handshake."""

    def __init__(self, keys: Keys, local_index: int, remote_index: int, created: float) -> None:
        self._send = ChaCha20Poly1305(keys.send)
        self._recv = ChaCha20Poly1305(keys.recv)
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = created
        self._counters: dict[int, int] = {}
        self._windows: dict[int, ReplayWindow] = {}
        self.confirmed = False  # responder: peer proved it has the keys

    def seal(self, link_id: int, plaintext: bytes) -> tuple[bytes, int]:
        counter = self._counters.get(link_id, 0)
        if counter > REJECT_AFTER_MESSAGES:
            raise OverflowError("nonce space exhausted")
        self._counters[link_id] = counter + 1
        header = wire.encode_transport_header(self.remote_index, link_id, counter)
        return header + self._send.encrypt(transport_nonce(link_id, counter), plaintext, header), counter

    def open(self, header: wire.TransportHeader, data: bytes) -> bytes | None:
        """Plaintext, or None if replayed; raises InvalidTag if forged."""
        window = self._windows.get(header.link_id)
        if window is None:
            window = self._windows[header.link_id] = ReplayWindow()
        if not window.check(header.counter):
            return None
        h = wire.TRANSPORT_HEADER_LEN
        plain = self._recv.decrypt(transport_nonce(header.link_id, header.counter), data[h:], data[:h])
        if not window.commit(header.counter):
            return None
        return plain

    def needs_rekey(self, now: float) -> bool:
        return (now >= self.created + REKEY_AFTER_TIME
                or max(self._counters.values(), default=0) > REKEY_AFTER_MESSAGES)

    def expired(self, now: float) -> bool:
        return now - self.created > REJECT_AFTER_TIME


def link_table(links: list[LinkConfig]) -> tuple[str, ...]:
    """Link names by link id, "" for an id not in use (as the initiation carries them)."""
    names = [""] * (max((c.link_id for c in links), default=-1) + 1)
    for c in links:
        names[c.link_id] = c.name
    return tuple(names)


@dataclass(slots=True)
class PeerStats:
    rx_datagrams: int = 0
    tx_datagrams: int = 0
    forged: int = 0
    replayed: int = 0
    expired_keys: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Peer:
    """One authenticated remote end and its multipath data plane."""

    def __init__(self, name: str, links: list[LinkConfig], now: float, *,
                 scheduler: str = "earliest-arrival", queue_limit: float = 0.05,
                 outer_ipv6: bool = False, learns_addresses: bool = False, warmup: bool = True,
                 random: Random | None = None) -> None:
        """`learns_addresses` (the gateway): reply to the sources authenticated traffic came
        from, validated as core/sources.py says (`random` makes its tokens)."""
        self.name = name
        self.learns_addresses = learns_addresses  # gateway: reply to authenticated sources
        self.link_names = link_table(links)
        self.bond = Bond(links, now, self._seal, scheduler=scheduler, queue_limit=queue_limit,
                         outer_ipv6=outer_ipv6, warmup=warmup, decides_standby=not learns_addresses)
        self.current: Keypair | None = None
        self.previous: Keypair | None = None
        self.pending: Keypair | None = None  # responder side: not yet confirmed
        self.retired: list[Keypair] = []  # displaced by newer keys: the gateway unindexes them
        self.remote_instance: int | None = None
        if learns_addresses and random is None:
            raise ValueError("a peer that learns addresses needs `random` for its challenges")
        self.sources = Sources(random or (lambda n: bytes(n)))
        self.out: list[Datagram] = []
        self.stats = PeerStats()
        self._ip_overhead = (wire.IPV6_HEADER if outer_ipv6 else wire.IPV4_HEADER) + wire.UDP_HEADER
        self._last_recv_keys: Keypair | None = None
        self.last_authenticated = now  # when a datagram from the peer last opened (or keys came)

    def set_links(self, links: list[LinkConfig], names: tuple[str, ...], now: float
                  ) -> tuple[list[str], list[str]]:
        """The peer's links changed live (`names`: by link id, "" where none): see
        Bond.set_links; a removed link's addresses are forgotten."""
        added, removed = self.bond.set_links(links, now)
        for link_id, name in enumerate(self.link_names):
            if name and (link_id >= len(names) or names[link_id] != name):
                self.sources.forget_link(link_id)
        self.link_names = names
        return added, removed

    @property
    def established(self) -> bool:
        return self.current is not None

    def keypairs(self) -> list[Keypair]:
        return [k for k in (self.current, self.previous, self.pending) if k is not None]

    def install(self, keypair: Keypair, confirmed: bool) -> None:
        """A handshake completed. The initiator uses it at once; the responder on confirmation."""
        if confirmed:
            self.last_authenticated = max(self.last_authenticated, keypair.created)
            keypair.confirmed = True
            if self.previous is not None:
                self.retired.append(self.previous)
            self.previous, self.current = self.current, keypair
            self.bond.on_new_send_keys()
        else:
            self.pending = keypair

    def _seal(self, link_id: int, plaintext: bytes) -> int:
        kp = self.current
        if kp is None:
            return -1
        addr = None
        if self.learns_addresses:
            addr = self.sources.pick(link_id, len(plaintext) + SEAL_OVERHEAD)
            if addr is None:
                return -1  # no address known for the link yet, or none with budget
        data, counter = kp.seal(link_id, plaintext)
        self.out.append(Datagram(link_id, addr, data))
        self.stats.tx_datagrams += 1
        return counter

    def learn_address(self, link_id: int, addr: Address, size: int, now: float) -> None:
        """An authenticated datagram of `size` bytes came from addr on a link: reply there
        (NAT, roaming, several sockets per link), within its budget until validated."""
        self.sources.learn(link_id, addr, size, now)
        self.send_challenges(now)

    def send_challenges(self, now: float) -> None:
        """A CHALLENGE to each address in use that has not proven it receives (core/sources.py)."""
        kp = self.current
        if kp is None:
            return
        for link_id, addr, token in self.sources.challenges(now):
            plaintext = wire.INNER_TS.pack(int(now * 1e6) & 0xFFFFFFFF) + wire.encode_frame(
                wire.Challenge(token))
            if self.sources.charge(link_id, addr, len(plaintext) + SEAL_OVERHEAD):
                data, _ = kp.seal(link_id, plaintext)
                self.out.append(Datagram(link_id, addr, data))
                self.stats.tx_datagrams += 1

    def set_remote_instance(self, instance: int) -> bool:
        """The peer's instance id from a handshake; True when it restarted (state reset)."""
        restarted = self.remote_instance is not None and instance != self.remote_instance
        self.remote_instance = instance
        if restarted:
            self.bond.reset_receive()
        return restarted

    def on_transport(self, keypair: Keypair, header: wire.TransportHeader, data: bytes,
                     now: float, arrival: float | None = None) -> bool:
        """Open one transport datagram. True if it authenticated (so its source may be learned)."""
        if keypair.expired(now):
            self.stats.expired_keys += 1
            return False
        try:
            plain = keypair.open(header, data)
        except InvalidTag:
            self.stats.forged += 1
            return False
        if plain is None:
            self.stats.replayed += 1
            return False
        self.stats.rx_datagrams += 1
        self.last_authenticated = now
        if keypair is self.pending:
            self.pending = None
            self.install(keypair, confirmed=True)
        if keypair is not self._last_recv_keys:
            self._last_recv_keys = keypair
            self.bond.on_new_recv_keys()
        self.bond.on_plaintext(header.link_id, plain, len(data) + self._ip_overhead,
                               header.counter, now, arrival)
        if self.bond.echoes:
            for token in self.bond.echoes:
                for link_id in self.sources.on_echo(token):
                    self.bond.start_warmup(link_id, now)  # it could not be filled before
            self.bond.echoes.clear()
        return True

    def expire_keys(self, now: float) -> list[Keypair]:
        """Drop keys past their life; returns the dropped ones (to unindex)."""
        dropped = []
        if self.previous is not None and (
            self.previous.expired(now)
            or (self.current is not None and now - self.current.created > KEEP_PREVIOUS)
        ):
            dropped.append(self.previous)
            self.previous = None
        if self.current is not None and self.current.expired(now):
            dropped.append(self.current)
            self.current = None
        if self.pending is not None and self.pending.expired(now):
            dropped.append(self.pending)
            self.pending = None
        return dropped
