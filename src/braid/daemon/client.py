"""`braid client`: the site end. One TUN, one or more UDP sockets per uplink."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from braid.config import ClientConfig, ConfigError, LinkSpec, load_client
from braid.control.prometheus import MetricsServer
from braid.control.server import ControlServer
from braid.core.caps import Caps
from braid.core.client import ClientCore, ClientParams
from braid.core.handshake import MAX_LINKS
from braid.core.link import BACKUP, LinkConfig
from braid.core.wire import tun_mtu, whole_mtu
from braid.io.hostnet import HostSetup
from braid.io.netlink import NetlinkError, interface_mtu
from braid.io.state import StateFile
from braid.io.tun import TunGone
from braid.io.udp import Remote, is_address, recv_batch, resolve_all
from braid.io.uplinks import RETRY, NetlinkEvents, Uplinks

from .common import DaemonBase, arrival_time, bring_up_tun, clamp_forwarded_mss, read_tun, sd_notify

log = logging.getLogger("braid.client")


RESOLVE_RETRY = 2.0  # seconds between attempts to resolve the gateway's endpoint at start
LOOP_HOLD = 30.0  # seconds a link whose datagrams loop back through the tunnel stays stopped
# an endpoint given by name is resolved again when no link has heard the gateway for
# RERESOLVE_AFTER seconds (its address may have changed), at most every RERESOLVE_EVERY
RERESOLVE_AFTER = 3.0
RERESOLVE_EVERY = 10.0


def _cap_specs(cfg: ClientConfig) -> dict[str, tuple[int, int]]:
    return {s.name: (s.cap_mb, s.cap_reset_day) for s in cfg.links if s.cap_mb is not None}


def _tunnel_only(routes: tuple, addresses: tuple) -> bool:
    """Whether every route lies within the tunnel's own subnets (no LAN or Internet behind)."""
    return all(any(r.version == a.version and r.subnet_of(a.network) for a in addresses)
               for r in routes)


class ClientDaemon(DaemonBase):
    role = "client"

    def __init__(self, cfg: ClientConfig) -> None:
        super().__init__()
        self.cfg = cfg
        remotes = self._resolve()
        # the TUN's MTU is fixed at start: it leaves room for IPv6 outer headers if any
        # gateway address is IPv6 (a link may take either family)
        self._outer_v6 = outer_v6 = any(family == socket.AF_INET6 for family, _ in remotes)
        self._ids = {spec.name: i for i, spec in enumerate(cfg.links)}  # kept across reloads
        self.state = StateFile(cfg.tun, Path(cfg.state_dir))
        self._state = self.state.load()
        self._saved_wall = int(self._state.get("handshake_wall_us", 0))
        saved_caps = self._state.get("caps")
        self.caps = Caps(_cap_specs(cfg), saved_caps if isinstance(saved_caps, dict) else {},
                         date.today())
        self._cap_seen: dict[int, int] = {}  # link id -> its wire bytes when last counted
        self._next_cap_check = 0.0
        self._next_save = 0.0
        link_cfgs = [self._link_config(spec, self._ids[spec.name]) for spec in cfg.links]
        self.link_mtu = link_mtu = min(lc.mtu for lc in link_cfgs)  # every datagram fits every link
        self.mtu = tun_mtu(link_mtu, outer_v6, cfg.fragments)
        now = time.monotonic()
        params = ClientParams(cfg.private_key, cfg.gateway_public_key, tuple(link_cfgs),
                              cfg.scheduler, cfg.queue_ms / 1000, outer_v6, cfg.warmup)
        self.core = ClientCore(params, now, random=os.urandom, wall_offset=time.time() - now,
                               wall_floor_us=self._saved_wall)
        self._next_check = now + RETRY
        self._host_changed = False
        self._next_resolve = now
        self._resolving = False
        self._resolved: tuple[list[Remote], list[str]] | None = None  # from the resolver thread
        try:
            self.opened(self._save_state)  # what caps counted, kept for the next start
            self.host = HostSetup(cfg.tun, cfg.table)
            self.host.remove_leftovers()
            self.uplinks = Uplinks([(self._ids[s.name], s.name, s.bind, s.sockets) for s in cfg.links],
                                   remotes, cfg.fwmark if cfg.routes else None,
                                   self._register, self._unregister)
            self.opened(self.uplinks.close)
            self.uplinks.open_all()
            self.tun, netsetup = bring_up_tun(cfg.tun, self.mtu, cfg.addresses)
            self.netsetup = netsetup
            self.opened(lambda: self.tun.close())  # the one open at exit (it may be re-made)
            self.opened(netsetup.teardown)
            clamp_forwarded_mss(netsetup, whole_mtu(link_mtu, outer_v6), cfg.fragments)
            self.opened(self.host.teardown)
            self._set_up_routing()
            self.events = NetlinkEvents()
            self.opened(self.events.close)
            self.loop.add(self.events.fileno(), self._on_netlink)
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
    def _mtu(spec: LinkSpec) -> int:
        return spec.mtu or interface_mtu(spec.bind) or 1500

    def _link_config(self, spec: LinkSpec, link_id: int) -> LinkConfig:
        """A link as the core runs it: a link over its monthly cap acts as a backup."""
        role = BACKUP if self.caps.over(spec.name) else spec.role
        return LinkConfig(spec.name, link_id, self._mtu(spec), role)

    def _count_caps(self, now: float) -> None:
        """Once a second: add each capped link's bytes to its period's count; a link that
        crosses its cap (or starts a new period) changes role at once. Saved every minute
        and on each change."""
        if now < self._next_cap_check:
            return
        self._next_cap_check = now + 1.0
        today = date.today()
        events = []
        for link in self.core.peer.bond.links:
            total = link.tx_bytes + link.report.bytes
            seen = self._cap_seen.get(link.id, 0)
            self._cap_seen[link.id] = total
            events += self.caps.account(link.name, total - seen, today)
        for line in events:
            log.warning("%s", line)
        if events:
            self.core.set_links([self._link_config(spec, self._ids[spec.name])
                                 for spec in self.cfg.links], now)
        if events or (self.caps.caps and now >= self._next_save):
            self._save_state(now)

    def _save_state(self, now: float | None = None) -> None:
        self._next_save = (now or time.monotonic()) + 60.0
        self._state["caps"] = self.caps.state()
        self._state["handshake_wall_us"] = self._saved_wall
        self.state.save(self._state)

    def _name(self, link_id: int) -> str:
        link = self.core.peer.bond.link(link_id)
        return link.name if link is not None else f"#{link_id}"

    def _endpoints_text(self) -> str:
        return ", ".join(f"{host}:{port}" for host, port in self.cfg.endpoints)

    def _resolve(self) -> list[Remote]:
        """The gateway's addresses; while no endpoint resolves (DNS not up at boot) the
        lookup is retried, logged once per reason, until one does or the daemon is told
        to stop."""
        told = None
        while True:
            remotes, errors = resolve_all(self.cfg.endpoints)
            for error in errors if remotes else ():
                log.warning("gateway endpoint %s (the others are used)", error)
            if remotes:
                return remotes
            reason = "; ".join(errors)
            if reason != told:
                log.warning("gateway endpoint: cannot resolve %s; retrying every %.0f s",
                            reason, RESOLVE_RETRY)
                told = reason
            if self.loop.wait_for_signal(RESOLVE_RETRY):
                raise OSError(f"stopped before the gateway endpoint {self._endpoints_text()} "
                              "resolved") from None

    def _maybe_reresolve(self, now: float) -> None:
        """No link has heard the gateway for a while and an endpoint is a name: look it
        up again, in a thread (a resolver can block for seconds), and follow new addresses."""
        result, self._resolved = self._resolved, None
        if result is not None:
            self._follow(*result)
        if (self._resolving or all(is_address(host) for host, _ in self.cfg.endpoints)
                or now < self._next_resolve
                or now - self.core.peer.last_authenticated < RERESOLVE_AFTER):
            return
        self._next_resolve = now + RERESOLVE_EVERY
        self._resolving = True

        def lookup() -> None:
            self._resolved = resolve_all(self.cfg.endpoints)
            self._resolving = False
        threading.Thread(target=lookup, name="braid-resolve", daemon=True).start()

    def _follow(self, remotes: list[Remote], errors: list[str]) -> None:
        """A lookup's result: the links move to the new addresses (IPv6 ones only if the
        TUN's MTU left room for them at start)."""
        if not remotes:
            log.warning("gateway endpoint: cannot resolve again (%s)", "; ".join(errors))
            return
        if not self._outer_v6 and any(family == socket.AF_INET6 for family, _ in remotes):
            log.warning("gateway endpoint %s now resolves to IPv6 addresses too: used at a "
                        "restart (the TUN's MTU has no room for IPv6 headers)",
                        self._endpoints_text())
            remotes = [r for r in remotes if r[0] != socket.AF_INET6]
            if not remotes:
                return
        old = self.uplinks.remotes
        if remotes != old:
            log.info("gateway endpoint %s moved: %s -> %s", self._endpoints_text(),
                     ", ".join(addr[0] for _, addr in old), ", ".join(addr[0] for _, addr in remotes))
            self.uplinks.set_remotes(remotes)

    def _set_up_routing(self) -> None:
        cfg = self.cfg
        if not cfg.routes:
            return
        self.host.full_tunnel(list(cfg.routes), cfg.fwmark)
        log.info("routes %s through %s (table %d, fwmark %#x)",
                 ", ".join(str(r) for r in cfg.routes), cfg.tun, cfg.table, cfg.fwmark)
        if not _tunnel_only(cfg.routes, cfg.addresses):
            versions: set[int] = {int(r.version) for r in cfg.routes}
            if cfg.forwarding:
                self.host.enable_forwarding(versions)
            elif off := HostSetup.forwarding_off(versions):
                log.warning("%s off and forwarding = false: hosts behind this site cannot use the "
                            "tunnel", ", ".join(off))
        if cfg.kill_switch:
            uplinks = self.uplinks.interfaces()
            self.host.kill_switch(uplinks, cfg.fwmark)
            log.info("kill switch: nothing leaves through %s outside the tunnel", ", ".join(uplinks))

    def _register(self, sock: socket.socket, link_id: int) -> None:
        self.loop.add(sock.fileno(), self._reader(sock, link_id))

    def _unregister(self, sock: socket.socket) -> None:
        self.loop.remove(sock.fileno())

    def _on_netlink(self, now: float) -> None:
        self.events.drain()
        self._host_changed = True
        self._next_check = min(self._next_check, now + 0.05)  # let a burst of events settle

    def _check_host(self, now: float) -> None:
        """After a netlink event (or every RETRY s while an uplink is not usable): re-bind the
        uplinks that changed and put back routes someone removed."""
        if now < self._next_check:
            return
        self._next_check = now + (RETRY if not self.uplinks.all_open() else 60.0)
        self.uplinks.check()
        if self._host_changed and self.cfg.routes:
            try:
                missing = self.host.ensure_routes()
            except NetlinkError as exc:
                log.warning("tunnel routes: %s", exc)
            else:
                if missing:
                    log.warning("%d tunnel route(s) were removed: put back", missing)
        self._host_changed = False

    def _reader(self, sock: socket.socket, link_id: int) -> Callable[[float], None]:
        on_datagram = self.core.on_datagram
        wall = time.time
        faults = self.loop.faults
        where = f"a datagram on link {self._name(link_id)}"

        def read(now: float) -> None:
            offset = now - wall()
            for data, stamp in recv_batch(sock):
                try:
                    on_datagram(link_id, data, now, arrival_time(stamp, offset, now))
                except Exception:
                    faults.record(where)
        return read

    def _on_tun(self, now: float) -> None:
        try:
            read_tun(self.tun, self._from_tun, self._send, now, self.loop.faults)
        except TunGone:
            self.tun = self.reopen_tun(self.tun, self.netsetup, self._on_tun)
            self._host_changed = True  # the full tunnel's routes through it went with it
            self._next_check = now

    def _from_tun(self, packet: bytes, now: float) -> None:
        if not self._looped(packet):
            self.core.on_tun_packet(packet, now)

    def _looped(self, packet: bytes) -> bool:
        """One of our own datagrams to the gateway, read back from the TUN: a route sends
        the tunnel's UDP into the tunnel. That link is stopped (LOOP_HOLD), with one log
        line, so the loop cannot take the LAN down; the datagram is dropped."""
        version = packet[0] >> 4
        if version == 4:
            if len(packet) < 28 or packet[9] != 17:
                return False
            udp, dst = (packet[0] & 15) * 4, packet[16:20]
        elif version == 6:
            if len(packet) < 48 or packet[6] != 17:
                return False
            udp, dst = 40, packet[24:40]
        else:
            return False
        if (dst, int.from_bytes(packet[udp + 2 : udp + 4])) not in self.uplinks.remote_keys:
            return False
        link_id = self.uplinks.link_of_port(int.from_bytes(packet[udp : udp + 2]))
        if link_id is None:
            return False
        self.uplinks.hold(link_id, LOOP_HOLD)
        log.error("link %s: its own datagrams to the gateway came back through %s (a routing "
                  "loop: a route sends %s through the tunnel); link stopped for %.0f s",
                  self._name(link_id), self.cfg.tun, socket.inet_ntop(
                      socket.AF_INET if version == 4 else socket.AF_INET6, dst), LOOP_HOLD)
        return True

    def _send(self, now: float) -> None:
        send = self.uplinks.send
        for dg in self.core.datagrams_to_send(now):
            try:
                send(dg.link_id, dg.data)
            except OSError as exc:
                self.send_error(self._name(dg.link_id), exc)

    def _flush(self, now: float) -> None:
        if self.loop.reload_requested:
            self.loop.reload_requested = False
            self.reload()
        self._send(now)
        self.write_delivered(self.tun, self.core.packets_to_deliver())
        self.log_events(self.core)
        self.book.maybe_sample(now, [self.core.peer])
        self._check_host(now)
        self._maybe_reresolve(now)
        self._count_caps(now)
        if self.core.last_wall_us != self._saved_wall:  # a handshake was sent: at most 1/s
            self._saved_wall = self.core.last_wall_us
            self._save_state(now)

    def reload(self) -> dict[str, Any]:
        """SIGHUP or `braid reload`: the new config is checked, then its links are applied
        live (added, removed, re-bound, new roles) while the other links carry on; any
        other change is named and waits for a restart."""
        if self.config_path is None:
            return {"ok": False, "error": "no config file to re-read"}
        try:
            new = load_client(self.config_path)
            changes = self._reload_links(new)
        except ConfigError as exc:
            log.error("reload refused, the running config stays: %s", exc)
            return {"ok": False, "error": str(exc)}
        self.cfg = dataclasses.replace(self.cfg, links=new.links)
        changed = [f.name for f in dataclasses.fields(new)
                   if getattr(new, f.name) != getattr(self.cfg, f.name)]
        if changed:
            log.warning("reload: %s changed; the client applies that at a restart (the running "
                        "config stays)", ", ".join(changed))
        if changes:
            log.info("reload: %s", "; ".join(changes))
        elif not changed:
            log.info("reload: %s unchanged", self.config_path)
        return {"ok": True, "changes": changes, "needs_restart": changed}

    def _reload_links(self, new: ClientConfig) -> list[str]:
        """Apply the new config's links; raises ConfigError (nothing applied) if one cannot
        be. A link keeps its id while its name stays; a new one takes the lowest free id."""
        ids = {spec.name: self._ids[spec.name] for spec in new.links if spec.name in self._ids}
        # not an id just removed either: its datagrams in flight would count for the new link
        free = (i for i in range(MAX_LINKS) if i not in ids.values() and i not in self._ids.values())
        for spec in new.links:
            if spec.name not in ids:
                ids[spec.name] = next(free, MAX_LINKS)
                if ids[spec.name] == MAX_LINKS:
                    raise ConfigError(f"{self.config_path}: link {spec.name}: no free link id "
                                      "(restart to renumber)")
        for spec in new.links:
            if (mtu := self._mtu(spec)) < self.link_mtu:
                raise ConfigError(f"{self.config_path}: link {spec.name}: MTU {mtu} is below the "
                                  f"tunnel's links' {self.link_mtu}: it needs a restart")
        self.caps.configure(_cap_specs(new), self.caps.state(), date.today())
        configs = [self._link_config(spec, ids[spec.name]) for spec in new.links]
        old = {spec.name: spec for spec in self.cfg.links}
        changes = []
        for name, link_id in self._ids.items():
            if name not in ids:
                self.uplinks.remove(link_id)
        for spec in new.links:
            link_id = ids[spec.name]
            if self.uplinks.spec(link_id) != (spec.name, spec.bind, spec.sockets):
                if spec.name in old:
                    changes.append(f"link {spec.name} re-bound to {spec.bind}")
                self.uplinks.add(link_id, spec.name, spec.bind, spec.sockets)
            if spec.name in old and old[spec.name].role != spec.role:
                changes.append(f"link {spec.name} now {spec.role}")
        self._ids = ids
        added, removed = self.core.set_links(configs, time.monotonic())
        changes += [f"link {n} added" for n in added] + [f"link {n} removed" for n in removed]
        if self.cfg.kill_switch and self.cfg.routes and changes:
            self.host.kill_switch(self.uplinks.interfaces(), self.cfg.fwmark)
        return changes

    def _on_control(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("cmd") == "reload":
            return self.reload()
        if request.get("cmd") != "status":
            return {"ok": False, "error": f"unknown command {request.get('cmd')!r}"}
        counters = dict(self.core.counters, link_unbound=self.uplinks.unbound_drops,
                        links_rebound=self.uplinks.reopened, link_loops=self.uplinks.loops)
        reply = self.status_reply(self.tun, self.mtu, counters, [self.core.peer],
                                  handshake=self.core.state.value)
        for peer in reply["peers"]:
            for link in peer["links"]:
                link["local_address"] = self.uplinks.local_address(link["id"])
                link["remote_address"] = self.uplinks.remote_address(link["id"])
                cap = self.caps.caps.get(link["name"])
                if cap is not None:
                    link["cap"] = cap.view()
        return reply

    def run(self) -> None:
        log.info("client up: tun %s mtu %d, %d link(s) to %s", self.tun.name, self.mtu,
                 len(self.cfg.links), self._endpoints_text())
        self.loop.install_signals()
        sd_notify("READY=1")
        self.core.on_timer(time.monotonic())
        self.loop.run(self.core.next_deadline, self.core.on_timer, self._flush)
        sd_notify("STOPPING=1")
        log.info("client stopping")
