"""Interface configuration through the `ip` and `nft` commands, with exact undo."""

from __future__ import annotations

import ipaddress
import logging
import re
import subprocess
from pathlib import Path

log = logging.getLogger("braid.netlink")


class NetlinkError(RuntimeError):
    pass


def _run(argv: tuple[str, ...], stdin: str | None = None) -> None:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    except FileNotFoundError:
        raise NetlinkError(f"{argv[0]}: command not found") from None
    if proc.returncode != 0:
        raise NetlinkError(f"{' '.join(argv)}: {proc.stderr.strip()}")


def ip(*args: str) -> None:
    _run(("ip", *args))


def load_nft_chain(table: str, chain: str, base: str, rules: list[str]) -> None:
    """Create `table inet TABLE` holding one base chain (`base`: its type, hook, priority
    and policy) with these rules."""
    body = "\n".join(f"    {r}" for r in rules)
    _run(("nft", "-f", "-"), f"""table inet {table} {{
  chain {chain} {{
    {base}
{body}
  }}
}}
""")


def run_undo(undo: list[tuple[str, ...]]) -> None:
    """Run the recorded undo commands, newest first, and forget them; one that fails (what
    it undoes went with the device already) is logged at debug level."""
    for argv in reversed(undo):
        try:
            _run(argv)
        except NetlinkError as exc:
            log.debug("%s", exc)
    undo.clear()


def interface_mtu(name: str) -> int | None:
    try:
        return int(Path(f"/sys/class/net/{name}/mtu").read_text())
    except (OSError, ValueError):
        return None


class InterfaceSetup:
    """Brings a TUN up with its MTU, addresses and routes; remembers what to undo."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._undo: list[tuple[str, ...]] = []  # whole commands, run in reverse order
        self._mtu: tuple[int, int] | None = None
        self._addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
        self._routes: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []

    def up(self, mtu: int, txqueuelen: int = 2000) -> None:
        ip("link", "set", "dev", self.device, "mtu", str(mtu), "txqueuelen", str(txqueuelen), "up")
        self._mtu = (mtu, txqueuelen)

    def add_address(self, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        args: tuple[str, ...] = ("addr", "add", str(iface), "dev", self.device)
        if iface.version == 6:
            args += ("nodad",)
        ip(*args)
        undo = ("ip", "addr", "del", str(iface), "dev", self.device)
        if undo not in self._undo:
            self._undo.append(undo)
            self._addresses.append(iface)

    def add_route(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        ip("route", "replace", str(net), "dev", self.device)
        undo = ("ip", "route", "del", str(net), "dev", self.device)
        if undo not in self._undo:
            self._undo.append(undo)
            self._routes.append(net)

    def remove_route(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        undo = ("ip", "route", "del", str(net), "dev", self.device)
        if undo in self._undo:
            self._undo.remove(undo)
            self._routes.remove(net)
            _run(undo)

    def restore(self) -> None:
        """The device was made again (same name): put back its MTU, addresses and routes."""
        if self._mtu is not None:
            self.up(*self._mtu)
        for iface in list(self._addresses):
            self.add_address(iface)
        for net in list(self._routes):
            self.add_route(net)

    def clamp_mss(self, whole_mtu: int) -> None:
        """Forwarded TCP through the TUN (either way) is told an MSS whose segments fit one
        datagram (`whole_mtu` bytes of inner packet): the TUN MTU is larger, for the hosts'
        own traffic, but a LAN host's 1500-byte packets would otherwise take two datagrams."""
        table = "braid_" + re.sub(r"[^A-Za-z0-9_]", "_", self.device)
        rules = []
        for family, mss in (("ipv4", whole_mtu - 40), ("ipv6", whole_mtu - 60)):
            for match in ("oifname", "iifname"):
                rules.append(f'{match} "{self.device}" meta nfproto {family} tcp flags & (syn | rst) == syn '
                             f"tcp option maxseg size > {mss} tcp option maxseg size set {mss}")
        load_nft_chain(table, "forward", "type filter hook forward priority mangle; policy accept;", rules)
        self._undo.append(("nft", "delete", "table", "inet", table))

    def teardown(self) -> None:
        run_undo(self._undo)
