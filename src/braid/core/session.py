"""A tunnel peer: transport keys (sealing, replay windows, rekey limits) around a Bond.

Each link numbers the datagrams it sends, one number space per link for the whole session
(its packet number, the transport header's counter): new keys do not restart it, as QUIC's
packet numbers go on across a key update. The nonce is built from it (unique under each
key, since no number is used twice), the receiver detects loss from its gaps and NACKs
name it, so the sender's history of what each link carried (core/recovery.py) survives a
rekey. Only a restarted peer starts its numbers over: its handshake carries a new instance
id, and the first datagram under the keys of that handshake starts the count afresh.

The bond hands plaintexts to `transmit`, which gives them their number; they are stamped
with the send time and sealed when the daemon pulls them (`datagrams_to_send(now)`), so the
peer's delay measures do not count the time spent building the rest of the batch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from operator import attrgetter
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


class Outgoing(NamedTuple):
    """A transport datagram numbered but not yet stamped and sealed."""

    link_id: int
    addr: Address | None
    number: int  # the link's packet number (the nonce's counter)
    frames: bytes  # the plaintext after its timestamp


def transport_nonce(link_id: int, counter: int) -> bytes:
    return b"\x00\x00\x00" + bytes((link_id,)) + struct.pack("<Q", counter)


class Keypair:
    """Transport keys of one completed handshake."""

    def __init__(self, keys: Keys, local_index: int, remote_index: int, created: float,
                 instance: int | None = None) -> None:
        """`instance`: the peer's instance id in the handshake that made these keys."""
        self._send = ChaCha20Poly1305(keys.send)
        self._recv = ChaCha20Poly1305(keys.recv)
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = created
        self.sealed = 0  # datagrams sealed with these keys (rekey after REKEY_AFTER_MESSAGES)
        self._windows: dict[int, ReplayWindow] = {}
        self.confirmed = False  # responder: peer proved it has the keys
        self.instance = instance

    def seal(self, link_id: int, counter: int, plaintext: bytes) -> bytes:
        """`counter`: the link's packet number, never used before by this session."""
        self.sealed += 1
        header = wire.encode_transport_header(self.remote_index, link_id, counter)
        return header + self._send.encrypt(transport_nonce(link_id, counter), plaintext, header)

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
                or self.sealed > REKEY_AFTER_MESSAGES)

    def expired(self, now: float) -> bool:
        return now - self.created > REJECT_AFTER_TIME


_by_link = attrgetter("link_id")


def sealed_size(frames: bytes) -> int:
    """UDP payload bytes of a transport datagram carrying `frames`."""
    return wire.INNER_TS_LEN + len(frames) + SEAL_OVERHEAD


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
    stale: int = 0  # opened with keys of a peer instance that has since restarted: dropped
    unsent: int = 0  # not sent: the keys expired before the daemon pulled them, or (never
    # in practice) the link's packet numbers ran out


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
        self.bond = Bond(links, now, self.transmit, scheduler=scheduler, queue_limit=queue_limit,
                         outer_ipv6=outer_ipv6, warmup=warmup, decides_standby=not learns_addresses)
        self.current: Keypair | None = None
        self.previous: Keypair | None = None
        self.pending: Keypair | None = None  # responder side: not yet confirmed
        self.retired: list[Keypair] = []  # displaced by newer keys: the gateway unindexes them
        self.remote_instance: int | None = None
        self._numbered_by: int | None = None  # the peer instance whose packet numbers we track
        if learns_addresses and random is None:
            raise ValueError("a peer that learns addresses needs `random` for its challenges")
        self.sources = Sources(random or (lambda n: bytes(n)))
        self.out: list[Datagram] = []  # ready to leave (handshakes)
        self._outbox: list[Outgoing] = []  # transport datagrams to stamp and seal when pulled
        self._numbers: dict[int, int] = {}  # link id -> its next packet number
        self.stats = PeerStats()
        self._ip_overhead = (wire.IPV6_HEADER if outer_ipv6 else wire.IPV4_HEADER) + wire.UDP_HEADER
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
        else:
            self.pending = keypair

    def transmit(self, link_id: int, frames: bytes) -> int:
        """Queue a transport datagram on a link (`frames`: its plaintext after the
        timestamp); returns its packet number, or -1 if it cannot leave (no keys; at the
        gateway, no address known for the link or none with budget for its size)."""
        if self.current is None:
            return -1
        addr = None
        if self.learns_addresses:
            addr = self.sources.pick(link_id, sealed_size(frames))
            if addr is None:
                return -1
        return self._queue(link_id, addr, frames)

    def _queue(self, link_id: int, addr: Address | None, frames: bytes) -> int:
        number = self._numbers.get(link_id, 0)
        if number > REJECT_AFTER_MESSAGES:  # 2^48 datagrams on one link: never reused
            self.stats.unsent += 1
            return -1
        self._numbers[link_id] = number + 1
        self._outbox.append(Outgoing(link_id, addr, number, frames))
        return number

    def has_outgoing(self) -> bool:
        return bool(self.out or self._outbox)

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """Every datagram made since the last call (each once), grouped by link in the
        order made; transport ones stamped with `now` and sealed with the current keys."""
        out, self.out = self.out, []
        outbox, self._outbox = self._outbox, []
        kp = self.current
        if outbox and kp is None:  # the keys expired since: the numbers go unused
            self.stats.unsent += len(outbox)
        elif outbox and kp is not None:
            ts = wire.INNER_TS.pack(int(now * 1e6) & 0xFFFFFFFF)
            seal = kp.seal
            out += [Datagram(o.link_id, o.addr, seal(o.link_id, o.number, ts + o.frames))
                    for o in outbox]
            self.stats.tx_datagrams += len(outbox)
        if len(out) > 1:
            out.sort(key=_by_link)  # stable: each link's datagrams stay in order
        return out

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
            frames = wire.encode_frame(wire.Challenge(token))
            if self.sources.charge(link_id, addr, sealed_size(frames)):
                self._queue(link_id, addr, frames)

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
        if keypair is self.pending:
            self.pending = None
            self.install(keypair, confirmed=True)
        if keypair.instance != self._numbered_by:
            if keypair is not self.current:  # sent before the peer restarted: its numbers
                self.stats.stale += 1  # are of the life before, which the bond forgot
                return False
            self._numbered_by = keypair.instance  # the first datagram of the new life
            self.bond.restart_numbers()
        self.stats.rx_datagrams += 1
        self.last_authenticated = now
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
