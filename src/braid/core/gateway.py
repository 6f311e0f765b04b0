"""Gateway role core: answers handshakes from known clients, one Peer per client, routes the
TUN's packets to the client owning the destination and checks each client's source addresses.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from . import noise, wire
from .classify import destination_address, link_scoped_v6, source_address
from .cookie import CookieChecker, RateLimiter, with_macs
from .events import Event, HandshakeCompleted, HandshakeRefused, KeyShared, LinksChanged, PeerRestarted
from .handshake import PROLOGUE, InitPayload, RespPayload
from .link import LinkConfig
from .session import Address, Datagram, Keypair, Peer
from .timers import ANSWER_COPY_TIME, TELL_INTERVAL, TWIN_LOG_INTERVAL

Random = Callable[[int], bytes]
# initiations with a valid mac1 per second above which the gateway is "under load" and asks
# for cookies (each costs two X25519 and two AEADs, ~100 us: 100/s is ~1 % of a core)
HANDSHAKE_LOAD = 100
SOURCE_RATE, SOURCE_BURST = 20.0, 10.0  # handshakes per second per source address (WireGuard: 20)
CLIENT_RATE, CLIENT_BURST = 10.0, 20.0  # handshakes per second per client key (state churn)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ClientEntry:
    name: str
    public_key: bytes
    networks: tuple[Network, ...]


@dataclass(frozen=True, slots=True)
class GatewayParams:
    private_key: bytes
    clients: tuple[ClientEntry, ...]
    scheduler: str = "earliest-arrival"
    queue_limit: float = 0.05
    link_mtu: int = 1500
    outer_ipv6: bool = False
    warmup: bool = True  # measure each new link with padding before data needs it
    client_to_client: bool = False  # forward one client's packets to another's addresses




def _show(addr: Address) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class _Routes:
    """Inner destination -> client name: exact host addresses first, then longest prefix."""

    def __init__(self, clients: tuple[ClientEntry, ...]) -> None:
        self.hosts: dict[bytes, str] = {}
        self.nets: list[tuple[Network, str]] = []
        for c in clients:
            for net in c.networks:
                if net.num_addresses == 1:
                    self.hosts[net.network_address.packed] = c.name
                else:
                    self.nets.append((net, c.name))
        self.nets.sort(key=lambda item: -item[0].prefixlen)

    def lookup(self, addr: bytes) -> str | None:
        name = self.hosts.get(addr)
        if name is not None or not self.nets:
            return name
        ip = ipaddress.ip_address(addr)
        for net, owner in self.nets:
            if ip.version == net.version and ip in net:
                return owner
        return None


class GatewayCore:
    def __init__(self, params: GatewayParams, now: float, *, random: Random) -> None:
        self.params = params
        self._random = random
        self.instance = struct.unpack("!I", random(4))[0]
        self._set_tables(params.clients)
        self.peers: dict[str, Peer] = {}
        self._index: dict[int, tuple[Peer, Keypair]] = {}
        self._last_wall: dict[str, int] = {}
        self._instances: dict[str, tuple[int | None, int | None]] = {}  # name -> (current, before)
        self._twin_logged: dict[str, float] = {}
        self._told: dict[str, tuple[float, int]] = {}  # event kind -> (last told, not told since)
        # per client, the last response: (when, its initiation's wall_us, links it went on, bytes)
        self._answered: dict[str, tuple[float, int, set[int], bytes]] = {}
        self.datagrams: list[Datagram] = []  # handshake answers (transport ones: each peer's)
        self.delivered: list[bytes] = []
        self._events: deque[Event] = deque()
        self._cookies = CookieChecker(noise.public_key(params.private_key), random, now)
        self._per_source = RateLimiter(SOURCE_RATE, SOURCE_BURST)
        self._cookie_rate = RateLimiter(SOURCE_RATE, SOURCE_BURST)  # cookie replies per source
        self._per_client = RateLimiter(CLIENT_RATE, CLIENT_BURST, max_keys=len(params.clients) + 1)
        self._load_window = (now, 0, 0)  # (window start, count before it, count in it)
        self.counters = dict.fromkeys(
            ("garbage", "unknown_index", "handshake_failed", "bad_mac", "cookie_replies",
             "rate_limited", "unknown_client", "stale_initiation",
             "spoofed_source", "client_to_client", "no_route", "handshakes", "key_shared",
             "link_local_dropped"), 0)

    # ------------------------------------------------------------------ handshake

    def _set_tables(self, clients: tuple[ClientEntry, ...]) -> None:
        self._by_key = {c.public_key: c for c in clients}
        self._routes = _Routes(clients)
        self._allowed = {c.name: _Routes((c,)) for c in clients}

    def set_clients(self, clients: tuple[ClientEntry, ...]) -> list[str]:
        """A reload: the clients are now these. A client removed, or whose key changed, loses
        its session at once (its keys are unindexed); every other client's session, links and
        traffic go on untouched, with its new prefixes. Returns what changed, one line each."""
        old = {c.name: c for c in self.params.clients}
        new = {c.name: c for c in clients}
        changes = []
        for name, entry in old.items():
            if name not in new or new[name].public_key != entry.public_key:
                peer = self.peers.pop(name, None)
                if peer is not None:
                    for kp in peer.keypairs():
                        self._index.pop(kp.local_index, None)
                for table in (self._last_wall, self._instances, self._answered, self._twin_logged):
                    table.pop(name, None)
                changes.append(f"client {name} {'removed' if name not in new else 'has a new key'}")
            elif new[name].networks != entry.networks:
                changes.append(f"client {name}: addresses now {', '.join(map(str, new[name].networks))}")
        changes += [f"client {name} added" for name in new if name not in old]
        self.params = dataclasses.replace(self.params, clients=clients)
        self._set_tables(clients)
        self._per_client = RateLimiter(CLIENT_RATE, CLIENT_BURST, max_keys=len(clients) + 1)
        return changes

    def _new_index(self) -> int:
        while True:
            index = struct.unpack("!I", self._random(4))[0]
            if index not in self._index:
                return index

    def _under_load(self, now: float) -> bool:
        """Count one initiation with a valid mac1; True when the last second or this one had
        more than HANDSHAKE_LOAD of them."""
        start, before, count = self._load_window
        if now - start >= 1.0:
            start, before, count = now, (count if now - start < 2.0 else 0), 0
        count += 1
        self._load_window = (start, before, count)
        return max(before, count) > HANDSHAKE_LOAD

    def _admit_initiation(self, data: bytes, msg: wire.HandshakeInit, addr: Address, now: float
                          ) -> bool:
        """The cheap checks before any Diffie-Hellman (core/cookie.py): mac1, then under load
        mac2 (else a cookie reply), then the source's rate."""
        if not self._cookies.mac1_ok(data):
            self.counters["bad_mac"] += 1
            return False
        if self._under_load(now) and not self._cookies.mac2_ok(data, addr, now):
            if not self._cookie_rate.allow(addr[0], now):  # a flood from one address: silence
                self.counters["rate_limited"] += 1
                return False
            nonce, sealed = self._cookies.reply(data, addr, now)
            self.datagrams.append(Datagram(0, addr, wire.CookieReply(msg.sender_index, nonce,
                                                                     sealed).encode()))
            self.counters["cookie_replies"] += 1
            return False
        if not self._per_source.allow(addr[0], now):
            self.counters["rate_limited"] += 1
            return False
        return True

    def _on_initiation(self, msg: wire.HandshakeInit, addr: Address, now: float) -> None:
        try:
            read = noise.responder_read(self.params.private_key, msg.ephemeral, msg.static_sealed,
                                        msg.payload_sealed, PROLOGUE)
            payload = InitPayload.decode(read.payload)
        except (noise.HandshakeError, wire.WireError) as exc:
            self.counters["handshake_failed"] += 1
            self._tell("failed", f"handshake from {_show(addr)} failed: {exc}", now)
            return
        client = self._by_key.get(read.remote_static)
        if client is None:
            self.counters["unknown_client"] += 1
            self._tell("unknown", f"handshake from {_show(addr)} refused: unknown key", now)
            return
        if not self._per_client.allow(client.name, now):
            self.counters["rate_limited"] += 1
            return
        last = self._last_wall.get(client.name, -1)
        if payload.wall_us == last:
            self._answer_copy(client.name, payload, addr, now)
            return
        if payload.wall_us < last:
            self.counters["stale_initiation"] += 1  # replayed, or the client's clock went back
            self._tell("stale", f"{client.name}: handshake from {_show(addr)} refused: its "
                       "timestamp is older than one already accepted (a replay, or the client's "
                       "clock was set back and its state file lost)", now)
            return
        self._last_wall[client.name] = payload.wall_us
        self._note_instance(client, payload.instance, addr, now)
        peer = self._peer_for(client, payload, now)
        index = self._new_index()
        e_pub, sealed, keys = noise.responder_write(read, self._random(32),
                                                    RespPayload(self.instance).encode())
        keypair = Keypair(keys, index, msg.sender_index, now, payload.instance)
        if peer.pending is not None:
            self._index.pop(peer.pending.local_index, None)
        peer.install(keypair, confirmed=False)
        self._index[index] = (peer, keypair)
        resp = with_macs(wire.HandshakeResp(index, msg.sender_index, e_pub, sealed).encode_body(),
                         client.public_key, None)
        self.datagrams.append(Datagram(payload.link_id, addr, resp))
        self._answered[client.name] = (now, payload.wall_us, {payload.link_id}, resp)
        self.counters["handshakes"] += 1
        self._events.append(HandshakeCompleted(client.name, payload.link_names[payload.link_id]))

    def _answer_copy(self, name: str, payload: InitPayload, addr: Address, now: float) -> None:
        """The same initiation arrived on another link (the client sends one on each): the
        response already made goes back on this link too, so the handshake completes over
        any link whose return path works. Only a copy of bytes already sent, once per link,
        within ANSWER_COPY_TIME, and smaller than the initiation: a replay cannot make the
        gateway send more than it received, nor change any state."""
        answered = self._answered.get(name)
        if (answered is None or answered[1] != payload.wall_us or now - answered[0] > ANSWER_COPY_TIME
                or payload.link_id in answered[2]):
            self.counters["stale_initiation"] += 1
            return
        answered[2].add(payload.link_id)
        self.datagrams.append(Datagram(payload.link_id, addr, answered[3]))

    def _tell(self, kind: str, line: str, now: float) -> None:
        """An event line at most once per TELL_INTERVAL per kind, with how many were not told
        (a flood must not become a flood of log lines)."""
        last, untold = self._told.get(kind, (-1e9, 0))
        if now - last < TELL_INTERVAL:
            self._told[kind] = (last, untold + 1)
            return
        self._told[kind] = (now, 0)
        self._events.append(HandshakeRefused(line, untold))

    def _note_instance(self, client: ClientEntry, instance: int, addr: Address, now: float) -> None:
        """A client's instance going back to the one before: two processes share its key (a
        restart always brings a new random instance). Logged, at most once a minute."""
        current, before = self._instances.get(client.name, (None, None))
        if instance == current:
            return
        self._instances[client.name] = (instance, current)
        if instance != before or now < self._twin_logged.get(client.name, -1e9) + TWIN_LOG_INTERVAL:
            return
        self._twin_logged[client.name] = now
        peer = self.peers.get(client.name)
        others = sorted({_show(a) for i in range(len(peer.link_names)) for a in peer.sources.addresses(i)}
                        - {_show(addr)}) if peer is not None else []
        self.counters["key_shared"] += 1
        self._events.append(KeyShared(client.name, _show(addr), ", ".join(others) or "another address"))

    def _peer_for(self, client: ClientEntry, payload: InitPayload, now: float) -> Peer:
        peer = self.peers.get(client.name)
        links = [LinkConfig(name, i, self.params.link_mtu)
                 for i, name in enumerate(payload.link_names) if name]
        if peer is not None and peer.link_names != payload.link_names:
            # the client's links changed (a reload, or a restart with another config): the
            # links it keeps keep their state, and so does the session
            added, removed = peer.set_links(links, payload.link_names, now)
            self._events.append(LinksChanged(client.name, tuple(lk.name for lk in links),
                                             tuple(added), tuple(removed)))
        if peer is None:
            peer = Peer(client.name, links, now, scheduler=self.params.scheduler,
                        queue_limit=self.params.queue_limit, outer_ipv6=self.params.outer_ipv6,
                        learns_addresses=True, warmup=self.params.warmup, random=self._random)
            self.peers[client.name] = peer
        if peer.set_remote_instance(payload.instance):
            self._events.append(PeerRestarted(client.name))
        return peer

    def next_event(self) -> Event | None:
        """The next thing the daemon should know (and log), or None."""
        if self._events:
            return self._events.popleft()
        for peer in self.peers.values():
            if peer.bond.events:
                return dataclasses.replace(peer.bond.events.popleft(), peer=peer.name)
        return None

    def packets_to_deliver(self) -> list[bytes]:
        """Every inner packet that passed the source checks since the last call, for the TUN."""
        if not self.delivered:
            return []
        packets, self.delivered = self.delivered, []
        return packets

    # ------------------------------------------------------------------ inputs

    def on_datagram(self, addr: Address, data: bytes, now: float, arrival: float | None = None) -> None:
        """`arrival`: when the datagram reached the host (kernel stamp), if known."""
        try:
            msg = wire.decode_outer(data)
        except wire.WireError:
            self.counters["garbage"] += 1
            return
        if isinstance(msg, wire.TransportHeader):
            entry = self._index.get(msg.receiver_index)
            if entry is None:
                self.counters["unknown_index"] += 1
                return
            peer, keypair = entry
            if peer.on_transport(keypair, msg, data, now, arrival):
                peer.learn_address(msg.link_id, addr, len(data), now)  # only after authentication
                self._collect(peer)
            if peer.retired:
                for kp in peer.retired:
                    self._index.pop(kp.local_index, None)
                peer.retired.clear()
        elif isinstance(msg, wire.HandshakeInit):
            if self._admit_initiation(data, msg, addr, now):
                self._on_initiation(msg, addr, now)
        else:
            self.counters["garbage"] += 1

    def _collect(self, peer: Peer) -> None:
        delivered = peer.bond.delivered
        if not delivered:
            return
        allowed = self._allowed[peer.name]
        isolate = not self.params.client_to_client
        for packet in delivered:
            src = source_address(packet)
            if src is None or allowed.lookup(src) != peer.name:
                if packet and packet[0] >> 4 == 6 and link_scoped_v6(packet):
                    self.counters["link_local_dropped"] += 1  # not an attack: its kernel's own
                else:
                    self.counters["spoofed_source"] += 1
            elif isolate and self._to_other_client(packet, peer.name):
                self.counters["client_to_client"] += 1
            else:
                self.delivered.append(packet)
        delivered.clear()

    def _to_other_client(self, packet: bytes, name: str) -> bool:
        dst = destination_address(packet)
        owner = self._routes.lookup(dst) if dst is not None else None
        return owner is not None and owner != name

    def on_tun_packet(self, packet: bytes, now: float) -> None:
        if packet and packet[0] >> 4 == 6 and link_scoped_v6(packet):
            self.counters["link_local_dropped"] += 1
            return
        dst = destination_address(packet)
        name = self._routes.lookup(dst) if dst is not None else None
        peer = self.peers.get(name) if name is not None else None
        if peer is None or not peer.established:
            self.counters["no_route"] += 1
            return
        peer.bond.on_tun_packet(packet, now)

    def on_timer(self, now: float) -> None:
        for peer in self.peers.values():
            for kp in peer.expire_keys(now):
                self._index.pop(kp.local_index, None)
            if peer.established:
                peer.send_challenges(now)
                peer.bond.on_timer(now)
                self._collect(peer)

    def keypair_count(self) -> int:
        """Keypairs the gateway can open datagrams with (bounded: 3 per client)."""
        return len(self._index)

    def next_deadline(self) -> float:
        return min((p.bond.next_deadline() for p in self.peers.values() if p.established),
                   default=float("inf"))

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """Every datagram made since the last call, of every client (each one once):
        handshake answers first, then each client's grouped by link, transport ones
        stamped with `now` (the daemon's clock as it pulls them) and sealed."""
        out, self.datagrams = self.datagrams, []
        for peer in self.peers.values():
            if peer.has_outgoing():
                out += peer.datagrams_to_send(now)
        return out
