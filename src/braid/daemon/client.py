"""`braid client`: the site end. One TUN, one or more UDP sockets per uplink."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from braid.config import ClientConfig
from braid.control.server import ControlServer
from braid.core.client import ClientCore, ClientParams
from braid.core.link import LinkConfig
from braid.core.wire import tun_mtu
from braid.io.netlink import interface_mtu
from braid.io.udp import link_socket, resolve

from .common import StatusBook, bring_up_tun
from .loop import EventLoop

log = logging.getLogger("braid.client")


class ClientDaemon:
    def __init__(self, cfg: ClientConfig) -> None:
        self.cfg = cfg
        family, self.remote = resolve(*cfg.endpoint)
        outer_v6 = family == 10
        link_cfgs = []
        for i, spec in enumerate(cfg.links):
            mtu = spec.mtu or interface_mtu(spec.bind) or 1500
            link_cfgs.append(LinkConfig(spec.name, i, mtu))
        self.mtu = min(tun_mtu(lc.mtu, outer_v6) for lc in link_cfgs)
        now = time.monotonic()
        params = ClientParams(cfg.private_key, cfg.gateway_public_key, tuple(link_cfgs),
                              cfg.scheduler, cfg.queue_ms / 1000, outer_v6)
        self.core = ClientCore(params, now, random=os.urandom, wall_offset=time.time() - now)
        self.loop = EventLoop()
        self.sockets: dict[int, list] = {}
        self._rr: dict[int, int] = {}
        self.book = StatusBook()
        self.send_errors = 0
        self.tun_write_errors = 0
        self._opened: list = []
        try:
            for i, spec in enumerate(cfg.links):
                socks = []
                for _ in range(spec.sockets):
                    sock = link_socket(spec.bind, family, self.remote)
                    self._opened.append(sock)
                    socks.append(sock)
                    self.loop.add(sock.fileno(), self._reader(sock, i))
                self.sockets[i] = socks
            self.tun, self.netsetup = bring_up_tun(cfg.tun, self.mtu, cfg.addresses)
            self.loop.add(self.tun.fd, self._on_tun)
            self.control = ControlServer(cfg.control, self._on_control)
            self.loop.add(self.control.fileno(), lambda now: self.control.serve_one())
        except Exception:
            self.close()
            raise

    def _reader(self, sock: Any, link_id: int):
        on_datagram = self.core.on_datagram
        recv = sock.recv

        def read(now: float) -> None:
            for _ in range(64):
                try:
                    data = recv(65535)
                except BlockingIOError:
                    return
                except OSError:  # ICMP unreachable reported on the connected socket
                    return
                on_datagram(link_id, data, now)
        return read

    def _on_tun(self, now: float) -> None:
        for packet in self.tun.read_batch():
            self.core.on_tun_packet(packet, now)

    def _flush(self, now: float) -> None:
        out = self.core.datagrams
        if out:
            for dg in out:
                socks = self.sockets[dg.link_id]
                i = self._rr.get(dg.link_id, 0)
                self._rr[dg.link_id] = i + 1
                try:
                    socks[i % len(socks)].send(dg.data)
                except OSError:
                    self.send_errors += 1
            out.clear()
        delivered = self.core.delivered
        if delivered:
            for packet in delivered:
                if not self.tun.write(packet):
                    self.tun_write_errors += 1
            delivered.clear()
        for event in self.core.peer.bond.events:
            log.info("link %s is %s", event.link, event.health.value)
        self.core.peer.bond.events.clear()
        for event in self.core.events:
            log.info("%s", event)
        self.core.events.clear()
        self.book.maybe_sample(now, [self.core.peer])

    def _on_control(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("cmd") != "status":
            return {"ok": False, "error": f"unknown command {request.get('cmd')!r}"}
        counters = dict(self.core.counters, send_errors=self.send_errors,
                        tun_write_errors=self.tun_write_errors)
        return {"ok": True, "role": "client", "tun": self.tun.name, "mtu": self.mtu,
                "handshake": self.core.state.value,
                "uptime_s": round(time.monotonic() - self.book.started, 1),
                "counters": counters, "peers": self.book.peers([self.core.peer])}

    def run(self) -> None:
        log.info("client up: tun %s mtu %d, %d link(s) to %s", self.tun.name, self.mtu,
                 len(self.cfg.links), self.remote)
        self.loop.install_signals()
        self.core.on_timer(time.monotonic())
        self.loop.run(self.core.next_deadline, self.core.on_timer, self._flush)
        log.info("client stopping")

    def close(self) -> None:
        if hasattr(self, "control"):
            self.control.close()
        if hasattr(self, "netsetup"):
            self.netsetup.teardown()
        if hasattr(self, "tun"):
            self.tun.close()
        for sock in self._opened:
            sock.close()
        self.loop.close()
