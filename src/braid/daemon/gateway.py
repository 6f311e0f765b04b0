"""`braid gateway`: the server end. One TUN and one UDP listener for every client."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import socket
import time
from typing import Any

from braid.config import ConfigError, GatewayConfig, load_gateway
from braid.control.prometheus import MetricsServer
from braid.control.server import ControlServer
from braid.core.gateway import ClientEntry, GatewayCore, GatewayParams
from braid.core.wire import tun_mtu, whole_mtu
from braid.io.hostnet import HostSetup, default_route_interface
from braid.io.netlink import NetlinkError
from braid.io.tun import TunGone
from braid.io.udp import Listener

from .common import DaemonBase, arrival_time, bring_up_tun, clamp_forwarded_mss, read_tun, sd_notify

log = logging.getLogger("braid.gateway")


def _within(net: ipaddress.IPv4Network | ipaddress.IPv6Network,
            outer: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    if isinstance(net, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return net.subnet_of(outer)
    if isinstance(net, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return net.subnet_of(outer)
    return False


class GatewayDaemon(DaemonBase):
    role = "gateway"

    def __init__(self, cfg: GatewayConfig) -> None:
        super().__init__()
        self.cfg = cfg
        try:
            self.host = HostSetup(cfg.tun, 0)
            self.host.remove_nft_leftovers()
            self.sock = Listener(*cfg.listen)
            self.opened(self.sock.close)
            outer_v6 = self.sock.family == socket.AF_INET6
            self.mtu = tun_mtu(cfg.mtu, outer_v6, cfg.fragments)
            clients = tuple(ClientEntry(c.name, c.public_key, c.addresses) for c in cfg.clients)
            params = GatewayParams(cfg.private_key, clients, cfg.scheduler, cfg.queue_ms / 1000,
                                   cfg.mtu, outer_v6, cfg.warmup, cfg.client_to_client)
            self.core = GatewayCore(params, time.monotonic(), random=os.urandom)
            self.loop.add(self.sock.fileno(), self._on_socket)
            self.tun, netsetup = bring_up_tun(cfg.tun, self.mtu, cfg.addresses)
            self.netsetup = netsetup
            self.opened(lambda: self.tun.close())  # the one open at exit (it may be re-made)
            self.opened(netsetup.teardown)
            clamp_forwarded_mss(netsetup, whole_mtu(cfg.mtu, outer_v6), cfg.fragments)
            for net in self._routed(cfg):
                netsetup.add_route(net)
            self.opened(self.host.teardown)
            self._set_up_nat()
            self.loop.add(self.tun.fd, self._on_tun)
            self.control = ControlServer(cfg.control, self._on_control)
            self.opened(self.control.close)
            self.loop.add(self.control.fileno(), lambda now: self.control.serve_one())
            if cfg.metrics is not None:
                self.metrics = MetricsServer(*cfg.metrics, lambda: self.control.ask({"cmd": "status"}))
                self.opened(self.metrics.close)
                log.info("metrics on http://%s:%d/metrics", *self.metrics.address)
        except Exception:
            self.close()
            raise

    @staticmethod
    def _routed(cfg: GatewayConfig) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Client prefixes outside the gateway's own subnets: routed to the TUN."""
        return [net for c in cfg.clients for net in c.addresses
                if not any(_within(net, a.network) for a in cfg.addresses)]

    def reload(self) -> dict[str, Any]:
        """SIGHUP or `braid reload`: re-read the config and apply the clients (added, removed,
        new keys or prefixes) without touching the other clients' sessions. A config that does
        not load leaves the running one as it is, and says why in one line."""
        if self.config_path is None:
            return {"ok": False, "error": "no config file to re-read"}
        try:
            new = load_gateway(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, the running config stays: %s", exc)
            return {"ok": False, "error": str(exc)}
        fixed = [k for k in ("private_key", "listen", "addresses", "tun", "control", "mtu", "scheduler",
                             "queue_ms", "fragments", "warmup", "nat", "egress", "forwarding",
                             "metrics", "client_to_client") if getattr(new, k) != getattr(self.cfg, k)]
        if fixed:
            log.warning("reload: %s changed; that needs a restart (the running value stays)",
                        ", ".join(fixed))
        old_routes, new_routes = self._routed(self.cfg), self._routed(new)
        try:
            for net in new_routes:
                if net not in old_routes:
                    self.netsetup.add_route(net)
            for net in old_routes:
                if net not in new_routes:
                    self.netsetup.remove_route(net)
        except NetlinkError as exc:
            log.error("reload: routes: %s", exc)
        clients = tuple(ClientEntry(c.name, c.public_key, c.addresses) for c in new.clients)
        changes = self.core.set_clients(clients)
        prefixes_changed = [c.addresses for c in new.clients] != [c.addresses for c in self.cfg.clients]
        self.cfg = dataclasses.replace(self.cfg, clients=new.clients)
        if self.cfg.nat and prefixes_changed:
            try:
                self._set_up_nat()
            except NetlinkError as exc:
                log.error("reload: nat: %s", exc)
        for line in changes:
            self._event(f"reload: {line}")
        log.info("reloaded %s: %d change(s)", self.config_path, len(changes))
        return {"ok": True, "changes": changes, "needs_restart": fixed}

    def _set_up_nat(self) -> None:
        """Forwarding while running, and masquerade of the clients' prefixes (IPv6 ones only
        where not globally routed) out of the egress interface, if the config says so."""
        cfg = self.cfg
        prefixes = [net for c in cfg.clients for net in c.addresses]
        versions: set[int] = {int(n.version) for n in prefixes} or {4}
        if cfg.forwarding:
            self.host.enable_forwarding(versions)
        elif off := HostSetup.forwarding_off(versions):
            log.warning("%s off and forwarding = false: clients reach only this host", ", ".join(off))
        if not cfg.nat:
            return
        egress = cfg.egress or default_route_interface(4)
        if egress is None:
            log.warning("nat = true but there is no default route and no egress set: not masquerading")
            return
        sources = [n for n in prefixes if n.version == 4 or not n.is_global]
        self.host.masquerade(sources, egress)
        log.info("masquerading %s out of %s", ", ".join(str(n) for n in sources), egress)

    def _on_socket(self, now: float) -> None:
        on_datagram = self.core.on_datagram
        offset = now - time.time()
        for data, addr, stamp in self.sock.recv_batch():
            try:
                on_datagram(addr, data, now, arrival_time(stamp, offset, now))
            except Exception:
                self.loop.faults.record(f"a datagram from {addr}")

    def _on_tun(self, now: float) -> None:
        try:
            read_tun(self.tun, self.core.on_tun_packet, self._send, now, self.loop.faults)
        except TunGone:
            self.tun = self.reopen_tun(self.tun, self.netsetup, self._on_tun)

    def _send(self, now: float) -> None:
        send = self.sock.send
        for dg in self.core.datagrams_to_send(now):
            if dg.addr is None:  # a gateway's datagrams always name their address
                continue
            try:
                send(dg.data, dg.addr)
            except OSError as exc:
                self.send_error("to clients", exc)

    def _flush(self, now: float) -> None:
        if self.loop.reload_requested:
            self.loop.reload_requested = False
            self.reload()
        self._send(now)
        peers = list(self.core.peers.values())
        self.write_delivered(self.tun, self.core.packets_to_deliver())
        self.log_events(self.core)
        self.book.maybe_sample(now, peers)

    def _on_control(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("cmd") == "reload":
            return self.reload()
        if request.get("cmd") != "status":
            return {"ok": False, "error": f"unknown command {request.get('cmd')!r}"}
        return self.status_reply(self.tun, self.mtu, self.core.counters, list(self.core.peers.values()),
                                 keypairs=self.core.keypair_count())

    def run(self) -> None:
        log.info("gateway up: tun %s mtu %d, listening on %s, %d client(s)", self.tun.name, self.mtu,
                 self.sock.sock.getsockname(), len(self.cfg.clients))
        self.loop.install_signals()
        sd_notify("READY=1")
        self.loop.run(self.core.next_deadline, self.core.on_timer, self._flush)
        sd_notify("STOPPING=1")
        log.info("gateway stopping")
