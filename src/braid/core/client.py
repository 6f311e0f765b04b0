"""Client role core: initiates handshakes over every link and runs one Peer (the gateway)."""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from . import noise, wire
from .classify import link_scoped_v6
from .cookie import CookieJar, MacChecker
from .events import Event, HandshakeCompleted, HandshakesUnanswered, PeerRestarted, PeerSilent
from .handshake import (
    PROLOGUE,
    HandshakeState,
    InitPayload,
    RespPayload,
    handshake_state,
)
from .link import LinkConfig
from .session import Datagram, Keypair, Peer, link_table
from .timers import IDLE_PROBE, REKEY_AFTER_TIME, REKEY_RETRY, SESSION_SILENCE, UNANSWERED_TELL

Random = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class ClientParams:
    private_key: bytes
    gateway_public_key: bytes
    links: tuple[LinkConfig, ...]
    scheduler: str = "earliest-arrival"
    queue_limit: float = 0.05
    outer_ipv6: bool = False
    warmup: bool = True  # measure each new link with padding before data needs it


class ClientCore:
    def __init__(self, params: ClientParams, now: float, *, random: Random, wall_offset: float,
                 wall_floor_us: int = 0) -> None:
        """`wall_offset` = wall clock - monotonic clock, for handshake timestamps;
        `wall_floor_us`: the last timestamp an earlier run used (kept across restarts), which
        every new one exceeds: the gateway refuses a timestamp not above the last it saw (a
        replay), so a clock set back must not make the client's new ones look old."""
        self.params = params
        self._random = random
        self._wall_offset = wall_offset
        self.instance = struct.unpack("!I", random(4))[0]
        self.peer = Peer("gateway", list(params.links), now, scheduler=params.scheduler,
                         queue_limit=params.queue_limit, outer_ipv6=params.outer_ipv6,
                         warmup=params.warmup)
        # sender index -> (Noise state, link it went on, the message as sent)
        self._pending: dict[int, tuple[noise.InitiatorPending, int, bytes]] = {}
        self._cookies = CookieJar(params.gateway_public_key)
        self._macs = MacChecker(noise.public_key(params.private_key))
        self._next_attempt = now
        self._last_wall_us = wall_floor_us
        self._silence_told = False  # the current silence of the gateway was logged
        self._answered: set[int] = set()  # the indices of the last answered round
        self._unanswered_since: float | None = None
        self._next_tell = 0.0
        self.counters = dict.fromkeys(("garbage", "unknown_index", "handshake_failed", "bad_mac",
                                       "cookies", "no_session", "handshakes", "link_local_dropped"), 0)
        self._events: deque[Event] = deque()
        self._announce = False  # the links changed: handshake now to tell the gateway

    def set_links(self, links: list[LinkConfig], now: float) -> tuple[list[str], list[str]]:
        """Links added, removed or given new roles while running (a reload). The gateway
        learns the new set from a handshake started at once; the session and the links that
        stay carry on meanwhile. Returns the names added and removed."""
        self.params = replace(self.params, links=tuple(links))
        added, removed = self.peer.set_links(links, link_table(links), now)
        if added or removed:
            self._announce = True
            self._next_attempt = now
        return added, removed

    # ------------------------------------------------------------------ outputs

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """Every datagram made since the last call (each one once), grouped by link;
        transport ones stamped with `now` (the daemon's clock as it pulls them) and sealed."""
        return self.peer.datagrams_to_send(now)

    def packets_to_deliver(self) -> list[bytes]:
        """Every inner packet released since the last call, for the TUN (each one once)."""
        delivered = self.peer.bond.delivered
        if not delivered:
            return []
        packets = delivered[:]
        delivered.clear()
        return packets

    # ------------------------------------------------------------------ handshake

    @property
    def state(self) -> HandshakeState:
        return handshake_state(self.peer.current is not None, bool(self._pending))

    @property
    def last_wall_us(self) -> int:
        """The latest handshake timestamp used (to keep across restarts)."""
        return self._last_wall_us

    def _wall_us(self, now: float) -> int:
        wall = int((now + self._wall_offset) * 1e6)
        self._last_wall_us = max(wall, self._last_wall_us + 1)
        return self._last_wall_us

    def _needs_handshake(self, now: float) -> bool:
        """No keys, keys due for a rekey, or a session the gateway no longer answers on any
        link (it restarted, or every path died): data is the heartbeat, since both ends probe
        each link at least every PROBE_INTERVAL."""
        current = self.peer.current
        return (current is None or current.needs_rekey(now) or self._announce
                or now >= self.peer.last_authenticated + self._silence_limit(now))

    def _silence_limit(self, now: float) -> float:
        """SESSION_SILENCE, or three idle probe intervals while the tunnel is idle (links are
        then probed every IDLE_PROBE only)."""
        return 3 * IDLE_PROBE + 0.5 if self.peer.bond.idle(now) else SESSION_SILENCE

    def _send_initiations(self, now: float) -> None:
        index = struct.unpack("!I", self._random(4))[0]
        wall = self._wall_us(now)
        names = link_table(list(self.params.links))
        self._pending = {}
        resting = self._resting_links()
        for link in self.params.links:
            if link.link_id in resting:
                continue
            payload = InitPayload(wall, self.instance, link.link_id, names).encode()
            e_pub, s_sealed, p_sealed, pending = noise.initiator_write(
                self.params.private_key, self.params.gateway_public_key, self._random(32),
                payload, PROLOGUE)
            body = wire.HandshakeInit(index, e_pub, s_sealed, p_sealed).encode_body()
            msg = self._cookies.seal(link.link_id, body, now)
            self._pending[index] = (pending, link.link_id, msg)
            self.peer.out.append(Datagram(link.link_id, None, msg))
            index = (index + 1) & 0xFFFFFFFF
        jitter = self._random(1)[0] / 255 * 0.2
        self._next_attempt = now + REKEY_RETRY + jitter

    def _resting_links(self) -> set[int]:
        """Backup links on standby while another link is usable: a rekey neither handshakes
        nor confirms its keys on them (their next probe carries the new keys), so a metered
        backup pays no handshakes while it is not needed."""
        if self.peer.current is None:
            return set()
        links = self.peer.bond.links
        if not any(lk.usable for lk in links):
            return set()
        return {lk.id for lk in links if lk.standby}

    def _on_cookie(self, msg: wire.CookieReply, now: float) -> None:
        """The gateway is under load: its cookie goes on this link's next initiation (mac2)."""
        entry = self._pending.get(msg.receiver_index)
        if entry is None:
            self.counters["unknown_index"] += 1
            return
        _, link_id, sent = entry
        if self._cookies.on_reply(link_id, sent, msg.nonce, msg.cookie_sealed, now):
            self.counters["cookies"] += 1
        else:
            self.counters["bad_mac"] += 1

    def _on_response(self, msg: wire.HandshakeResp, now: float) -> None:
        entry = self._pending.get(msg.receiver_index)
        if entry is None:
            if msg.receiver_index not in self._answered:  # else a copy on another link
                self.counters["unknown_index"] += 1
            return
        try:
            payload, keys = noise.initiator_read(entry[0], msg.ephemeral, msg.payload_sealed)
            resp = RespPayload.decode(payload)
        except (noise.HandshakeError, wire.WireError):
            self.counters["handshake_failed"] += 1
            return
        self._answered = set(self._pending)
        self._pending = {}
        self._announce = False
        self._silence_told = False
        self.counters["handshakes"] += 1
        if self.peer.set_remote_instance(resp.instance):
            self._events.append(PeerRestarted())
        resting = self._resting_links()
        keypair = Keypair(keys, msg.receiver_index, msg.sender_index, now, resp.instance)
        self.peer.install(keypair, confirmed=True)
        self._events.append(HandshakeCompleted())
        for link in self.peer.bond.links:  # confirm the keys and show the gateway each link
            if link.id not in resting:
                link.last_tx = -1.0
        self.peer.bond.on_timer(now)

    # ------------------------------------------------------------------ inputs

    def on_datagram(self, link_id: int, data: bytes, now: float, arrival: float | None = None) -> None:
        """`arrival`: when the datagram reached the host (kernel stamp), if known."""
        try:
            msg = wire.decode_outer(data)
        except wire.WireError:
            self.counters["garbage"] += 1
            return
        if isinstance(msg, wire.HandshakeResp):
            if self._macs.mac1_ok(data):
                self._on_response(msg, now)
            else:
                self.counters["bad_mac"] += 1
        elif isinstance(msg, wire.CookieReply):
            self._on_cookie(msg, now)
        elif isinstance(msg, wire.TransportHeader):
            for kp in self.peer.keypairs():
                if kp.local_index == msg.receiver_index:
                    self.peer.on_transport(kp, msg, data, now, arrival)
                    return
            self.counters["unknown_index"] += 1
        else:
            self.counters["garbage"] += 1  # a client never answers initiations

    def on_tun_packet(self, packet: bytes, now: float) -> None:
        if packet[0] >> 4 == 6 and link_scoped_v6(packet):
            self.counters["link_local_dropped"] += 1
            return
        if not self.peer.established:
            self.counters["no_session"] += 1
            return
        self.peer.bond.on_tun_packet(packet, now)

    def _tell_unanswered(self, now: float) -> None:
        """Handshakes sent for a while and none answered: say so (wrong key, host or port,
        or the gateway down), once per UNANSWERED_TELL."""
        if self.peer.current is not None or not self._pending:
            self._unanswered_since = None
            return
        if self._unanswered_since is None:
            self._unanswered_since = now
        elif now - self._unanswered_since >= UNANSWERED_TELL and now >= self._next_tell:
            self._next_tell = now + 6 * UNANSWERED_TELL
            silent = now - self._unanswered_since
            self._events.append(HandshakesUnanswered(silent))

    def next_event(self) -> Event | None:
        """The next thing the daemon should know (and log), or None."""
        if self._events:
            return self._events.popleft()
        link_events = self.peer.bond.events
        return link_events.popleft() if link_events else None

    def on_timer(self, now: float) -> None:
        self._tell_unanswered(now)
        if self._needs_handshake(now) and now >= self._next_attempt:
            silent = now - self.peer.last_authenticated
            if (self.peer.current is not None and silent >= self._silence_limit(now)
                    and not self._silence_told):
                self._silence_told = True
                self._events.append(PeerSilent(silent))
            self._send_initiations(now)
        self.peer.expire_keys(now)
        if self.peer.established:
            self.peer.bond.on_timer(now)

    def next_deadline(self) -> float:
        current = self.peer.current
        if current is None:
            return self._next_attempt
        due = min(current.created + REKEY_AFTER_TIME,
                  self.peer.last_authenticated + self._silence_limit(self.peer.bond.now))
        rekey = self._next_attempt if self._announce else max(self._next_attempt, due)
        return min(self.peer.bond.next_deadline(), rekey)
