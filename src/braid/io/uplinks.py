"""The client's UDP sockets per uplink, kept bound to what the uplink is now.

An uplink's interface may not exist yet, have no address yet, be deleted and re-created
(a PPPoE reconnect, a modem reset: a new ifindex) or change address (a DHCP renew). A
connected UDP socket keeps the ifindex and source address it had, so it goes on failing;
`check()` closes it and opens a new one as soon as the uplink is usable again. It is called
on every netlink event (`NetlinkEvents`: links, addresses, routes) and, for uplinks not
yet usable, every RETRY seconds. A link that cannot be opened is logged once per reason,
with its name, and retried; it never stops the daemon.

Each uplink picks its own gateway address among those the endpoints resolve to (IPv4 or
IPv6 outer transport): the first one it can reach, that is, one it has a route to and,
bound to an interface, a source address of its own for (the kernel would otherwise borrow
another interface's address); bound to an address, one of that address's family. When
nothing else reaches the gateway, a borrowed source is used (logged), and the link is re-bound
as soon as its interface has an address of its own: an interface comes up before its address
arrives (PPPoE's IPCP, DHCP), and a socket opened in between would keep the borrowed one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .hostnet import interface_of_address
from .udp import Remote, family_of, is_address, link_socket

log = logging.getLogger("braid.uplinks")

RETRY = 2.0  # seconds between attempts to open an uplink that is not usable yet
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400


def _is_local(address: str, family: int) -> bool:
    """Whether `address` is assigned on this host now (a bind to it succeeds)."""
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.bind((address, 0))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def describe(exc: OSError) -> str:
    """An errno in words: 'No such device (ENODEV)'."""
    name = errno.errorcode.get(exc.errno or 0, "")
    words = exc.strerror or str(exc)
    return f"{words} ({name})" if name else words


@dataclass
class Uplink:
    link_id: int
    name: str
    bind: str  # interface name or local address
    count: int  # sockets wanted
    sockets: list[socket.socket] = field(default_factory=list)
    ifindex: int | None = None  # of the interface the sockets were opened on
    source: str | None = None  # their local address
    remote: Remote | None = None  # the gateway address they are connected to
    borrowed: bool = False  # bound to an interface, their source is another interface's
    reason: str | None = None  # why the link is not open (logged once)
    rr: int = 0
    held_until: float = -1.0  # stopped (its datagrams looped back through the tunnel) until


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


class Uplinks:
    def __init__(self, links: list[tuple[int, str, str, int]], remotes: list[Remote],
                 fwmark: int | None, register: Callable[[socket.socket, int], None],
                 unregister: Callable[[socket.socket], None]) -> None:
        """`links`: (link id, name, bind, sockets) each; `remotes`: the gateway's addresses,
        in order of preference; `register(sock, link_id)` adds a socket to the event loop,
        `unregister(sock)` removes it."""
        self.fwmark = fwmark
        self._set_remotes(remotes)
        self._register, self._unregister = register, unregister
        self.links: dict[int, Uplink] = {i: Uplink(i, name, bind, count)
                                         for i, name, bind, count in links}
        self.reopened = 0
        self.unbound_drops = 0  # datagrams for a link with no socket
        self.loops = 0  # times a link was stopped: its own datagrams came back from the TUN
        self._ports: dict[int, int] = {}  # local port of each open socket -> link id

    # ------------------------------------------------------------------ state

    def _identity(self, up: Uplink) -> tuple[int | None, str | None]:
        """(ifindex, expected source) of the uplink as it is now; raises OSError if unusable."""
        if is_address(up.bind):
            if not _is_local(up.bind, family_of(up.bind)):
                raise OSError(errno.EADDRNOTAVAIL, f"address {up.bind} is not assigned (yet)")
            return None, up.bind
        try:
            index = socket.if_nametoindex(up.bind)
        except OSError:
            raise OSError(errno.ENODEV, f"interface {up.bind} does not exist (yet)") from None
        return index, None

    def _stale(self, up: Uplink) -> str | None:
        """Why the open sockets no longer match the uplink, or None."""
        try:
            index, _ = self._identity(up)
        except OSError as exc:
            return describe(exc)
        if index is not None and index != up.ifindex:
            return f"interface {up.bind} was re-created"
        if up.source is not None and not _is_local(up.source, family_of(up.source)):
            return f"address {up.source} is gone"
        if up.borrowed and up.source is not None and self._own_source(up) not in (None, up.source):
            # opened between the interface's coming up and its address's arriving (a PPPoE
            # reconnect, a re-created interface): never re-bound otherwise
            return f"interface {up.bind} has an address of its own now"
        remote = up.remote
        if remote is None or remote not in self.remotes:
            return "the gateway's address changed"
        if len(self.remotes) > 1 and not self._reaches(up, remote):
            return f"no route to the gateway's {remote[1][0]} any more"  # another may do
        return None

    def _probe_source(self, up: Uplink, remote: Remote, device: str | None = None) -> str | None:
        """The source address a socket of the uplink's to `remote` would get now (None: it
        cannot be opened or connected, no route)."""
        try:
            probe = link_socket(up.bind, remote[0], remote[1], self.fwmark, device)
        except OSError:
            return None
        with contextlib.closing(probe):
            return str(probe.getsockname()[0])

    def _reaches(self, up: Uplink, remote: Remote) -> bool:
        device = interface_of_address(up.bind) if is_address(up.bind) else None
        return self._probe_source(up, remote, device) is not None

    def _own_source(self, up: Uplink) -> str | None:
        """The source address a socket bound to the uplink's interface would get now, if it
        is the interface's own (None: none yet, or borrowed from another interface)."""
        assert up.remote is not None
        source = self._probe_source(up, up.remote)
        return source if source is not None and interface_of_address(source) == up.bind else None

    def _close(self, up: Uplink) -> None:
        for sock in up.sockets:
            self._unregister(sock)
            with contextlib.suppress(OSError):
                self._ports.pop(sock.getsockname()[1], None)
            sock.close()
        up.sockets = []
        up.ifindex = up.source = up.remote = None
        up.borrowed = False

    def _open(self, up: Uplink) -> bool:
        if time.monotonic() < up.held_until:
            return False
        try:
            index, _ = self._identity(up)
            remote, socks, borrowed = self._connect(up)
        except OSError as exc:
            reason = describe(exc)
            if reason != up.reason:
                log.warning("link %s: cannot use %s: %s; retrying", up.name, up.bind, reason)
                up.reason = reason
            return False
        up.sockets, up.ifindex, up.remote, up.borrowed = socks, index, remote, borrowed
        up.source = socks[0].getsockname()[0] if socks else None
        if borrowed:
            log.warning("link %s: %s has no address to reach the gateway with; sending from "
                        "%s, another interface's, until it has one", up.name, up.bind, up.source)
        for sock in socks:
            self._register(sock, up.link_id)
            self._ports[sock.getsockname()[1]] = up.link_id
        if up.reason is not None:
            log.info("link %s: %s usable again (from %s)", up.name, up.bind, up.source)
            self.reopened += 1
        up.reason = None
        return True

    def _connect(self, up: Uplink) -> tuple[Remote, list[socket.socket], bool]:
        """The uplink's sockets, connected to the first gateway address it can reach, and
        whether their source is borrowed from another interface."""
        device = interface_of_address(up.bind) if is_address(up.bind) else None
        remotes = [r for r in self.remotes
                   if not is_address(up.bind) or r[0] == family_of(up.bind)]
        if not remotes:
            raise OSError(errno.EAFNOSUPPORT, f"no gateway address of the family of {up.bind}")
        borrowed: tuple[Remote, list[socket.socket]] | None = None
        error: OSError | None = None
        for remote in remotes:
            try:
                socks = self._sockets(up, remote, device)
            except OSError as exc:
                error = error or exc
                continue
            # an interface with no address of this family borrows another interface's: a
            # last resort only, when a family of its own cannot reach the gateway
            if is_address(up.bind) or interface_of_address(socks[0].getsockname()[0]) == up.bind:
                if borrowed is not None:
                    _close_all(borrowed[1])
                return remote, socks, False
            if borrowed is None:
                borrowed = remote, socks
            else:
                _close_all(socks)
        if borrowed is not None:
            return (*borrowed, True)
        assert error is not None
        raise error

    def _sockets(self, up: Uplink, remote: Remote, device: str | None) -> list[socket.socket]:
        socks: list[socket.socket] = []
        try:
            for _ in range(up.count):
                socks.append(link_socket(up.bind, remote[0], remote[1], self.fwmark, device))
        except OSError:
            _close_all(socks)
            raise
        return socks

    # ------------------------------------------------------------------ public

    def open_all(self) -> None:
        for up in self.links.values():
            self._open(up)

    def add(self, link_id: int, name: str, bind: str, count: int) -> None:
        """A link added live (a reload): opened now if it can be, else retried."""
        self.remove(link_id)
        self.links[link_id] = up = Uplink(link_id, name, bind, count)
        self._open(up)

    def remove(self, link_id: int) -> None:
        up = self.links.pop(link_id, None)
        if up is not None:
            self._close(up)

    def set_remotes(self, remotes: list[Remote]) -> None:
        """The gateway's addresses changed (a name resolves elsewhere now): a link connected
        to an address no longer among them is connected again, to one that is."""
        self._set_remotes(remotes)
        for up in self.links.values():
            if up.sockets and up.remote not in self.remotes:
                self._close(up)
                self._open(up)

    def _set_remotes(self, remotes: list[Remote]) -> None:
        self.remotes = list(remotes)
        # (packed address, port) of every gateway address: to recognise our own datagrams
        self.remote_keys = {(socket.inet_pton(family, addr[0]), addr[1])
                            for family, addr in self.remotes}

    def link_of_port(self, port: int) -> int | None:
        """The link whose socket has this local port, if any."""
        return self._ports.get(port)

    def hold(self, link_id: int, seconds: float) -> None:
        """Stop a link for a while (its datagrams loop back through the tunnel): its sockets
        close, and it is opened again after `seconds` (the loop may have been mended)."""
        up = self.links.get(link_id)
        if up is None:
            return
        self._close(up)
        up.held_until = time.monotonic() + seconds
        up.reason = "routing loop"
        self.loops += 1

    def spec(self, link_id: int) -> tuple[str, str, int] | None:
        up = self.links.get(link_id)
        return None if up is None else (up.name, up.bind, up.count)

    def check(self) -> None:
        """Re-bind every uplink whose interface or address changed; open those not open."""
        for up in self.links.values():
            if up.sockets:
                why = self._stale(up)
                if why is None:
                    continue
                log.info("link %s: %s; re-binding", up.name, why)
                self._close(up)
                up.reason = why
            self._open(up)

    def all_open(self) -> bool:
        return all(up.sockets for up in self.links.values())

    def send(self, link_id: int, data: bytes) -> None:
        up = self.links.get(link_id)
        if up is None or not up.sockets:
            self.unbound_drops += 1
            return
        up.rr += 1
        up.sockets[up.rr % len(up.sockets)].send(data)

    def interfaces(self) -> list[str]:
        """The uplinks' interface names (for the kill switch), bound by address or not."""
        out = []
        for up in self.links.values():
            name = interface_of_address(up.bind) if is_address(up.bind) else up.bind
            if name:
                out.append(name)
        return out

    def local_address(self, link_id: int) -> str | None:
        up = self.links.get(link_id)
        return None if up is None else up.source

    def remote_address(self, link_id: int) -> str | None:
        """The gateway address the link sends to, as host:port."""
        up = self.links.get(link_id)
        if up is None or up.remote is None:
            return None
        host, port = up.remote[1][:2]
        return f"[{host}]:{port}" if up.remote[0] == socket.AF_INET6 else f"{host}:{port}"

    def close(self) -> None:
        for up in self.links.values():
            self._close(up)


class NetlinkEvents:
    """A netlink socket subscribed to link, address and route changes; readable on each."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setblocking(False)
        groups = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR
                  | RTMGRP_IPV6_ROUTE)
        self.sock.bind((0, groups))

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> int:
        """Read every waiting message; how many reads there were (their content is not
        needed: any change makes the uplinks and routes be checked)."""
        n = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                try:
                    self.sock.recv(65536)
                except BlockingIOError:
                    raise
                except OSError:  # ENOBUFS: events were lost, which is an event too
                    pass
                n += 1
                if n > 10_000:
                    break
        return n

    def close(self) -> None:
        self.sock.close()
