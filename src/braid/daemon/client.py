"""`braid client`: the site end. One TUN, one or more UDP sockets per uplink."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from braid.config import ClientConfig
from braid.control.server import ControlServer
from braid.core.client import ClientCore, ClientParams
from braid.core.link import LinkConfig
from braid.core.wire import tun_mtu, whole_mtu
from braid.io.netlink import interface_mtu
from braid.io.udp import ANCILLARY, link_socket, resolve, rx_stamp

from .common import DaemonBase, arrival_time, bring_up_tun, clamp_forwarded_mss, read_tun

log = logging.getLogger("braid.client")


class ClientDaemon(DaemonBase):
    role = "client"

    def __init__(self, cfg: ClientConfig) -> None:
        super().__init__()
        self.cfg = cfg
        family, self.remote = resolve(*cfg.endpoint)
        outer_v6 = family == socket.AF_INET6
        link_cfgs = []
        for i, spec in enumerate(cfg.links):
            mtu = spec.mtu or interface_mtu(spec.bind) or 1500
            link_cfgs.append(LinkConfig(spec.name, i, mtu))
        link_mtu = min(lc.mtu for lc in link_cfgs)  # every datagram must fit every link
        self.mtu = tun_mtu(link_mtu, outer_v6, cfg.fragments)
        now = time.monotonic()
        params = ClientParams(cfg.private_key, cfg.gateway_public_key, tuple(link_cfgs),
                              cfg.scheduler, cfg.queue_ms / 1000, outer_v6, cfg.warmup)
        self.core = ClientCore(params, now, random=os.urandom, wall_offset=time.time() - now)
        self.sockets: dict[int, list] = {}
        self._rr: dict[int, int] = {}
        try:
            for i, spec in enumerate(cfg.links):
                socks = []
                for _ in range(spec.sockets):
                    sock = link_socket(spec.bind, family, self.remote)
                    self.opened(sock.close)
                    socks.append(sock)
                    self.loop.add(sock.fileno(), self._reader(sock, i))
                self.sockets[i] = socks
            self.tun, netsetup = bring_up_tun(cfg.tun, self.mtu, cfg.addresses)
            self.opened(self.tun.close)
            self.opened(netsetup.teardown)
            clamp_forwarded_mss(netsetup, whole_mtu(link_mtu, outer_v6), cfg.fragments)
            self.loop.add(self.tun.fd, self._on_tun)
            self.control = ControlServer(cfg.control, self._on_control)
            self.opened(self.control.close)
            self.loop.add(self.control.fileno(), lambda now: self.control.serve_one())
        except Exception:
            self.close()
            raise

    def _reader(self, sock: Any, link_id: int) -> Callable[[float], None]:
        on_datagram = self.core.on_datagram
        recvmsg = sock.recvmsg
        wall = time.time
        faults = self.loop.faults
        where = f"a datagram on link {self.cfg.links[link_id].name}"

        def read(now: float) -> None:
            offset = now - wall()
            for _ in range(64):
                try:
                    data, ancdata, _, _ = recvmsg(65535, ANCILLARY)
                except BlockingIOError:
                    return
                except OSError:  # ICMP unreachable reported on the connected socket
                    return
                try:
                    on_datagram(link_id, data, now, arrival_time(rx_stamp(ancdata), offset, now))
                except Exception:
                    faults.record(where)
        return read

    def _on_tun(self, now: float) -> None:
        read_tun(self.tun, self.core.on_tun_packet, self._send, now, self.loop.faults)

    def _send(self) -> None:
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

    def _flush(self, now: float) -> None:
        self._send()
        self.write_delivered(self.tun, self.core.delivered)
        self.log_events([self.core.peer], self.core.events, name_peers=False)
        self.book.maybe_sample(now, [self.core.peer])

    def _on_control(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("cmd") != "status":
            return {"ok": False, "error": f"unknown command {request.get('cmd')!r}"}
        return self.status_reply(self.tun, self.mtu, self.core.counters, [self.core.peer],
                                 handshake=self.core.state.value)

    def run(self) -> None:
        log.info("client up: tun %s mtu %d, %d link(s) to %s", self.tun.name, self.mtu,
                 len(self.cfg.links), self.remote)
        self.loop.install_signals()
        self.core.on_timer(time.monotonic())
        self.loop.run(self.core.next_deadline, self.core.on_timer, self._flush)
        log.info("client stopping")
