"""`braid gateway`: the server end. One TUN and one UDP listener for every client."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from braid.config import GatewayConfig
from braid.control.server import ControlServer
from braid.core.gateway import ClientEntry, GatewayCore, GatewayParams
from braid.core.wire import tun_mtu
from braid.io.udp import Listener

from .common import StatusBook, bring_up_tun
from .loop import EventLoop

log = logging.getLogger("braid.gateway")


class GatewayDaemon:
    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.loop = EventLoop()
        self.book = StatusBook()
        self.send_errors = 0
        self.tun_write_errors = 0
        try:
            self.sock = Listener(*cfg.listen)
            outer_v6 = self.sock.family == socket.AF_INET6
            self.mtu = tun_mtu(cfg.mtu, outer_v6)
            clients = tuple(ClientEntry(c.name, c.public_key, c.addresses) for c in cfg.clients)
            params = GatewayParams(cfg.private_key, clients, cfg.scheduler, cfg.queue_ms / 1000,
                                   cfg.mtu, outer_v6)
            self.core = GatewayCore(params, time.monotonic(), random=os.urandom)
            self.loop.add(self.sock.fileno(), self._on_socket)
            self.tun, self.netsetup = bring_up_tun(cfg.tun, self.mtu, cfg.addresses)
            for c in cfg.clients:  # routes for client prefixes outside the gateway's own subnets
                for net in c.addresses:
                    if not any(net.subnet_of(a.network) for a in cfg.addresses if a.version == net.version):
                        self.netsetup.add_route(net)
            self.loop.add(self.tun.fd, self._on_tun)
            self.control = ControlServer(cfg.control, self._on_control)
            self.loop.add(self.control.fileno(), lambda now: self.control.serve_one())
        except Exception:
            self.close()
            raise

    def _on_socket(self, now: float) -> None:
        on_datagram = self.core.on_datagram
        for data, addr in self.sock.recv_batch():
            on_datagram(addr, data, now)

    def _on_tun(self, now: float) -> None:
        for packet in self.tun.read_batch():
            self.core.on_tun_packet(packet, now)

    def _flush(self, now: float) -> None:
        send = self.sock.send
        for dg in self.core.drain_datagrams():
            try:
                send(dg.data, dg.addr)
            except OSError:
                self.send_errors += 1
        delivered = self.core.delivered
        if delivered:
            for packet in delivered:
                if not self.tun.write(packet):
                    self.tun_write_errors += 1
            delivered.clear()
        for peer in self.core.peers.values():
            for event in peer.bond.events:
                log.info("%s: link %s is %s", peer.name, event.link, event.health.value)
            peer.bond.events.clear()
        for event in self.core.events:
            log.info("%s", event)
        self.core.events.clear()
        self.book.maybe_sample(now, list(self.core.peers.values()))

    def _on_control(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("cmd") != "status":
            return {"ok": False, "error": f"unknown command {request.get('cmd')!r}"}
        counters = dict(self.core.counters, send_errors=self.send_errors,
                        tun_write_errors=self.tun_write_errors)
        return {"ok": True, "role": "gateway", "tun": self.tun.name, "mtu": self.mtu,
                "uptime_s": round(time.monotonic() - self.book.started, 1),
                "counters": counters, "peers": self.book.peers(list(self.core.peers.values()))}

    def run(self) -> None:
        log.info("gateway up: tun %s mtu %d, listening on %s, %d client(s)", self.tun.name, self.mtu,
                 self.sock.sock.getsockname(), len(self.cfg.clients))
        self.loop.install_signals()
        self.loop.run(self.core.next_deadline, self.core.on_timer, self._flush)
        log.info("gateway stopping")

    def close(self) -> None:
        if hasattr(self, "control"):
            self.control.close()
        if hasattr(self, "netsetup"):
            self.netsetup.teardown()
        if hasattr(self, "tun"):
            self.tun.close()
        if hasattr(self, "sock"):
            self.sock.close()
        self.loop.close()
