"""Interface configuration through the `ip` command (iproute2), with exact undo."""

from __future__ import annotations

import ipaddress
import logging
import subprocess
from pathlib import Path

log = logging.getLogger("braid.netlink")


class NetlinkError(RuntimeError):
    pass


def ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetlinkError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def interface_mtu(name: str) -> int | None:
    try:
        return int(Path(f"/sys/class/net/{name}/mtu").read_text())
    except (OSError, ValueError):
        return None


class InterfaceSetup:
    """Brings a TUN up with its MTU, addresses and routes; remembers what to undo."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._undo: list[tuple[str, ...]] = []

    def up(self, mtu: int, txqueuelen: int = 2000) -> None:
        ip("link", "set", "dev", self.device, "mtu", str(mtu), "txqueuelen", str(txqueuelen), "up")

    def add_address(self, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        args = ("addr", "add", str(iface), "dev", self.device)
        if iface.version == 6:
            args += ("nodad",)
        ip(*args)
        self._undo.append(("addr", "del", str(iface), "dev", self.device))

    def add_route(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        ip("route", "replace", str(net), "dev", self.device)
        self._undo.append(("route", "del", str(net), "dev", self.device))

    def teardown(self) -> None:
        for args in reversed(self._undo):
            try:
                ip(*args)
            except NetlinkError as exc:  # gone with the device already
                log.debug("%s", exc)
        self._undo.clear()
