"""What braid sets up on a host besides its TUN, the wg-quick way, and removes exactly:

- full tunnel (client `routes`): the prefixes go into a routing table of braid's own,
  `ip rule not fwmark MARK lookup TABLE` sends everything unmarked there, and braid's own
  UDP carries MARK (SO_MARK), so it keeps leaving through the uplinks and never loops;
  `lookup main suppress_prefixlength 0` first lets the main table's more specific routes
  (the LAN, the uplinks' subnets) win over the tunnel's default;
- a kill switch (client `kill_switch`): an nftables table dropping what would leave
  through an uplink without the mark (site traffic leaking to an ISP), DHCP and neighbour
  discovery excepted;
- masquerade (gateway `nat`): an nftables table NATing the clients' prefixes out of the
  egress interface;
- forwarding sysctls, set while running and put back on exit.

Rule priorities, the table number and the nftables table names are braid's own, derived
from the TUN name, so a start finds and removes what a crashed earlier run of the same
TUN left (`remove_leftovers`): the sysctls it changed are recorded in a state file and
restored first.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import subprocess
from pathlib import Path

from .netlink import NetlinkError, _run, load_nft_chain, run_undo

log = logging.getLogger("braid.hostnet")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
STATE_DIR = Path("/run/braid")
RULE_PRIORITY_SUPPRESS = 32000  # below main (32766): braid's rules come first
RULE_PRIORITY_TUNNEL = 32001
FORWARD_SYSCTLS = {4: "net/ipv4/ip_forward", 6: "net/ipv6/conf/all/forwarding"}


def nft_name(prefix: str, tun: str) -> str:
    return f"{prefix}_" + re.sub(r"[^A-Za-z0-9_]", "_", tun)


def _ip_json(*args: str) -> list[dict]:
    try:
        proc = subprocess.run(("ip", "-j", *args), capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise NetlinkError("ip: command not found") from None
    if proc.returncode != 0:
        raise NetlinkError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    try:
        out = json.loads(proc.stdout or "[]")
    except ValueError:
        return []
    return out if isinstance(out, list) else []


def default_route_interface(version: int = 4) -> str | None:
    """The interface of the main table's default route (the lowest metric)."""
    routes = _ip_json(f"-{version}", "route", "show", "default")
    routes.sort(key=lambda r: r.get("metric", 0))
    return routes[0].get("dev") if routes else None


def interface_of_address(address: str) -> str | None:
    """The interface holding a local address, if any."""
    for iface in _ip_json("addr", "show"):
        for info in iface.get("addr_info", []):
            if info.get("local") == address:
                return iface.get("ifname")
    return None


def netns_id() -> str:
    """This network namespace's identity: sysctls and routes are per namespace."""
    try:
        return str(os.stat("/proc/self/ns/net").st_ino)
    except OSError:
        return "0"


def _read_sysctl(key: str) -> str | None:
    try:
        return Path("/proc/sys", key).read_text().strip()
    except OSError:
        return None


def _write_sysctl(key: str, value: str) -> None:
    try:
        Path("/proc/sys", key).write_text(value + "\n")
    except OSError as exc:
        raise NetlinkError(f"sysctl {key.replace('/', '.')}={value}: {exc.strerror}") from None


class HostSetup:
    """Routes, rules, nftables tables and sysctls for one TUN, each undone in reverse order."""

    def __init__(self, tun: str, table: int, state_dir: Path = STATE_DIR) -> None:
        self.tun = tun
        self.table = table
        self.state_file = state_dir / f"{tun}.{netns_id()}.host.json"
        self._undo: list[tuple[str, ...]] = []
        self._sysctls: dict[str, str] = {}  # key -> value to restore
        self._routes: list[Network] = []

    # --------------------------------------------------------------- crash recovery

    def remove_leftovers(self) -> None:
        """Undo what an earlier run of this TUN left after a crash: restore its sysctls, then
        delete braid's rules for this table, flush the table, delete its nftables tables."""
        self._restore_saved_sysctls()
        removed = 0
        for version in (4, 6):
            for rule in _ip_json(f"-{version}", "rule", "show"):
                if rule.get("priority") in (RULE_PRIORITY_SUPPRESS, RULE_PRIORITY_TUNNEL) and (
                        str(rule.get("table")) in (str(self.table), "main")):
                    try:
                        _run(("ip", f"-{version}", "rule", "del", "priority", str(rule["priority"])))
                        removed += 1
                    except NetlinkError:
                        pass
            with contextlib.suppress(NetlinkError):
                _run(("ip", f"-{version}", "route", "flush", "table", str(self.table)))
        for prefix in ("braid", "braid_ks", "braid_nat"):
            try:
                _run(("nft", "delete", "table", "inet", nft_name(prefix, self.tun)))
                removed += 1
            except NetlinkError:
                pass
        if removed:
            log.info("removed %d rule(s)/table(s) left by an earlier run of %s", removed, self.tun)
        self.state_file.unlink(missing_ok=True)

    def remove_nft_leftovers(self) -> None:
        """The gateway's part of `remove_leftovers`: sysctls and nftables tables (it adds no
        rules and no table of routes)."""
        self._restore_saved_sysctls()
        for prefix in ("braid", "braid_nat"):
            try:
                _run(("nft", "delete", "table", "inet", nft_name(prefix, self.tun)))
                log.info("removed nftables table %s left by an earlier run", nft_name(prefix, self.tun))
            except NetlinkError:
                pass
        self.state_file.unlink(missing_ok=True)

    def _restore_saved_sysctls(self) -> None:
        try:
            saved = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            saved = {}
        for key, value in saved.get("sysctls", {}).items():
            try:
                _write_sysctl(key, value)
                log.info("restored sysctl %s=%s left by an earlier run", key.replace("/", "."), value)
            except NetlinkError as exc:
                log.warning("%s", exc)

    def _save_state(self) -> None:
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"sysctls": self._sysctls}))
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.warning("cannot record host state in %s: %s", self.state_file, exc.strerror)

    # --------------------------------------------------------------- sysctls

    def enable_forwarding(self, versions: set[int]) -> None:
        for version in sorted(versions):
            key = FORWARD_SYSCTLS[version]
            old = _read_sysctl(key)
            if old is None or old == "1":
                continue
            self._sysctls.setdefault(key, old)
            self._save_state()
            _write_sysctl(key, "1")
            log.info("sysctl %s=1 while braid runs (was %s)", key.replace("/", "."), old)

    @staticmethod
    def forwarding_off(versions: set[int]) -> list[str]:
        return [FORWARD_SYSCTLS[v].replace("/", ".") for v in sorted(versions)
                if _read_sysctl(FORWARD_SYSCTLS[v]) not in ("1", None)]

    # --------------------------------------------------------------- full tunnel

    def full_tunnel(self, routes: list[Network], fwmark: int) -> None:
        """Route `routes` through the TUN from table `table`, for everything not marked."""
        versions = {net.version for net in routes}
        self._routes = list(routes)
        self.ensure_routes()
        for version in sorted(versions):
            v = f"-{version}"
            _run(("ip", v, "rule", "add", "priority", str(RULE_PRIORITY_SUPPRESS), "table", "main",
                  "suppress_prefixlength", "0"))
            self._undo.append(("ip", v, "rule", "del", "priority", str(RULE_PRIORITY_SUPPRESS)))
            _run(("ip", v, "rule", "add", "priority", str(RULE_PRIORITY_TUNNEL), "not", "fwmark",
                  str(fwmark), "table", str(self.table)))
            self._undo.append(("ip", v, "rule", "del", "priority", str(RULE_PRIORITY_TUNNEL)))
            self._undo.append(("ip", v, "route", "flush", "table", str(self.table)))

    def ensure_routes(self) -> int:
        """(Re)install the tunnel's routes; returns how many were missing. Idempotent."""
        if not self._routes:
            return 0
        present = set()
        for version in {n.version for n in self._routes}:
            try:
                shown = _ip_json(f"-{version}", "route", "show", "table", str(self.table))
            except NetlinkError:  # the table does not exist until its first route
                shown = []
            for r in shown:
                dst = r.get("dst")
                if r.get("dev") == self.tun and dst:
                    present.add("0.0.0.0/0" if dst == "default" and version == 4 else
                                "::/0" if dst == "default" else dst if "/" in dst else
                                f"{dst}/{32 if version == 4 else 128}")
        missing = [n for n in self._routes if str(n) not in present]
        for net in missing:
            _run(("ip", f"-{net.version}", "route", "replace", str(net), "dev", self.tun,
                  "table", str(self.table)))
        return len(missing)

    def kill_switch(self, uplinks: list[str], fwmark: int) -> None:
        """Drop what would leave through an uplink unmarked: only braid's own UDP, DHCP and
        IPv6 neighbour discovery go out there directly."""
        table = nft_name("braid_ks", self.tun)
        undo = ("nft", "delete", "table", "inet", table)
        # again (a reload changed the uplinks): replaced in one transaction, no gap to leak in
        replace = f"table inet {table} {{}}\ndelete table inet {table}\n" if undo in self._undo else ""
        names = ", ".join(f'"{u}"' for u in sorted(set(uplinks)))
        allow = ("udp sport 68 udp dport 67 accept\n    udp sport 546 udp dport 547 accept\n    "
                 "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept")
        _run(("nft", "-f", "-"), replace + f"""table inet {table} {{
  chain output {{
    type filter hook output priority filter; policy accept;
    oifname {{ {names} }} meta mark != {fwmark} jump guard
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    oifname {{ {names} }} counter drop
  }}
  chain guard {{
    {allow}
    counter drop
  }}
}}
""")
        if not replace:
            self._undo.append(undo)

    # --------------------------------------------------------------- gateway NAT

    def masquerade(self, sources: list[Network], egress: str) -> None:
        """(Re)write the NAT table: a reload calls it again with the new prefixes."""
        table = nft_name("braid_nat", self.tun)
        undo = ("nft", "delete", "table", "inet", table)
        if undo in self._undo:
            self._undo.remove(undo)
            _run(undo)
        rules = []
        for version, keyword in ((4, "ip"), (6, "ip6")):
            nets = [str(n) for n in sources if n.version == version]
            if nets:
                rules.append(f'oifname "{egress}" {keyword} saddr {{ {", ".join(nets)} }} masquerade')
        if not rules:
            return
        load_nft_chain(table, "postrouting", "type nat hook postrouting priority srcnat; policy accept;",
                       rules)
        self._undo.append(("nft", "delete", "table", "inet", table))

    # --------------------------------------------------------------- teardown

    def teardown(self) -> None:
        run_undo(self._undo)
        self._routes = []
        for key, value in self._sysctls.items():
            try:
                _write_sysctl(key, value)
            except NetlinkError as exc:
                log.warning("%s", exc)
        self._sysctls.clear()
        self.state_file.unlink(missing_ok=True)
