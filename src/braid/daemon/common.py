"""Pieces shared by both daemons: TUN bring-up, status sampling, logging of core events."""

from __future__ import annotations

import ipaddress
import logging
import time

from braid.control.metrics import SLICE, Throughput
from braid.control.status import link_counters, peer_status
from braid.core.session import Peer
from braid.io.netlink import InterfaceSetup
from braid.io.tun import Tun

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def bring_up_tun(name: str, mtu: int, addresses: tuple[Interface, ...]) -> tuple[Tun, InterfaceSetup]:
    tun = Tun(name)
    setup = InterfaceSetup(tun.name)
    try:
        setup.up(mtu)
        for iface in addresses:
            setup.add_address(iface)
    except Exception:
        setup.teardown()
        tun.close()
        raise
    return tun, setup


class StatusBook:
    """Samples per-link byte counters once a second for the throughput figures."""

    def __init__(self) -> None:
        self.tput = Throughput()
        self.next_sample = 0.0
        self.started = time.monotonic()

    def maybe_sample(self, now: float, peers: list[Peer]) -> None:
        if now < self.next_sample:
            return
        self.next_sample = now + SLICE
        counters: dict[str, int] = {}
        for peer in peers:
            counters.update(link_counters(peer))
        self.tput.sample(now, counters)

    def peers(self, peers: list[Peer]) -> list[dict]:
        return [peer_status(p, self.tput) for p in peers]
