"""A site on braid as its Internet connection, in namespaces, with braid configured by
`routes` and `nat` only (issue 11):

    lan --- site router ==wan1== isp1 ------------\\
                        ==wan2== cgnat (NAT) ---- core ---- vps (braid gateway)
                                                   \\------ server (the Internet)

wan1 is a 20 Mbit/s "fibre" with a public address, wan2 a 10 Mbit/s "4G" behind carrier
NAT; each has its own default route on the site router. The LAN host reaches the server
only through the tunnel, and the server sees the VPS's address. Events: restarts of either
daemon, a DHCP renew of wan1 to a new address, wan1 deleted and re-created (new ifindex),
wan2's upstream dying alone. Each is measured as the longest gap between ping replies from
the LAN host to the server (50 ms apart) and, for link events, the time until that link is
up and carrying again.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .netns import LabError, Namespaces

BRAID = [sys.executable, "-m", "braid.cli.main"]
SERVER = "192.0.2.10"
VPS = "198.51.100.2"
RATES = {"wan1": 20, "wan2": 10}  # Mbit/s, both directions
PING_TIME = re.compile(r"^\[(\d+\.\d+)\].*bytes from")


def _key() -> tuple[str, str]:
    private = subprocess.run([*BRAID, "keygen"], capture_output=True, text=True, check=True).stdout
    public = subprocess.run([*BRAID, "pubkey"], input=private, capture_output=True, text=True,
                            check=True).stdout
    return private.strip(), public.strip()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds it took; raises LabError past `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Outage:
    event: str
    ping_gap_ms: float
    link_back_ms: float | None = None  # link events: until the link is up and carrying again


class SiteLab:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.ns = Namespaces()
        self.gateway: subprocess.Popen | None = None
        self.client: subprocess.Popen | None = None
        self.logs = {role: open(workdir / f"{role}.log", "w") for role in ("gateway", "client")}  # noqa: SIM115

    # ------------------------------------------------------------------ topology

    def _wan(self, name: str, isp: str, site_addr: str, isp_addr: str, bare_for: float = 0.0
             ) -> None:
        """An uplink to an ISP; `bare_for`: seconds it is up with no address yet (a PPPoE
        link before its IPCP is done)."""
        ns = self.ns
        ns.veth("site", name, isp, "s0")
        time.sleep(bare_for)
        ns.run("site", ["ip", "addr", "add", site_addr, "dev", name])
        ns.run(isp, ["ip", "addr", "add", isp_addr, "dev", "s0"])
        for role, dev in (("site", name), (isp, "s0")):
            ns.run(role, ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                          f"{RATES[name]}mbit", "burst", "16kb", "latency", "50ms"])
        metric = "100" if name == "wan1" else "200"
        ns.run("site", ["ip", "route", "add", "default", "via", isp_addr.split("/")[0], "dev", name,
                        "metric", metric])

    def build(self) -> None:
        ns = self.ns
        for role in ("lan", "site", "isp1", "cgnat", "core", "vps", "server"):
            ns.add(role)
        for role in ("site", "isp1", "cgnat", "core"):
            ns.run(role, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        ns.veth("lan", "eth0", "site", "lan0")
        ns.run("lan", ["ip", "addr", "add", "192.168.50.2/24", "dev", "eth0"])
        ns.run("lan", ["ip", "route", "add", "default", "via", "192.168.50.1"])
        ns.run("site", ["ip", "addr", "add", "192.168.50.1/24", "dev", "lan0"])
        self._wan("wan1", "isp1", "100.64.1.2/24", "100.64.1.1/24")
        self._wan("wan2", "cgnat", "10.99.2.2/24", "10.99.2.1/24")
        for isp, i, (a, b) in (("isp1", 1, ("203.0.113.1", "203.0.113.2")),
                               ("cgnat", 2, ("203.0.113.5", "203.0.113.6"))):
            ns.veth(isp, "c0", "core", f"i{i}")
            ns.run(isp, ["ip", "addr", "add", f"{a}/30", "dev", "c0"])
            ns.run("core", ["ip", "addr", "add", f"{b}/30", "dev", f"i{i}"])
            ns.run(isp, ["ip", "route", "add", "default", "via", b])
        ns.run("core", ["ip", "route", "add", "100.64.1.0/24", "via", "203.0.113.1"])
        subprocess.run(ns.cmd("cgnat", ["nft", "-f", "-"]), check=True, text=True, input=(
            "table ip cgn {\n chain post {\n  type nat hook postrouting priority srcnat;\n"
            '  oifname "c0" masquerade\n }\n}\n'))
        ns.veth("core", "v0", "vps", "eth0")
        ns.run("core", ["ip", "addr", "add", "198.51.100.1/24", "dev", "v0"])
        ns.run("vps", ["ip", "addr", "add", f"{VPS}/24", "dev", "eth0"])
        ns.run("vps", ["ip", "route", "add", "default", "via", "198.51.100.1"])
        ns.veth("core", "x0", "server", "eth0")
        ns.run("core", ["ip", "addr", "add", "192.0.2.1/24", "dev", "x0"])
        ns.run("server", ["ip", "addr", "add", f"{SERVER}/24", "dev", "eth0"])
        ns.run("server", ["ip", "route", "add", "default", "via", "192.0.2.1"])
        self._write_configs()

    def _write_configs(self) -> None:
        gk, gp = _key()
        ck, cp = _key()
        d = self.dir
        (d / "gateway.toml").write_text(f'''[gateway]
private_key = "{gk}"
listen = "0.0.0.0:7000"
address = "10.77.0.1/24"
control = "{d}/gw.sock"
nat = true
[[client]]
name = "site"
public_key = "{cp}"
address = ["10.77.0.2/32", "192.168.50.0/24"]
''')
        (d / "client.toml").write_text(f'''[client]
private_key = "{ck}"
address = "10.77.0.2/24"
control = "{d}/cl.sock"
state_dir = "{d}"
routes = ["0.0.0.0/0"]
[gateway]
public_key = "{gp}"
endpoint = "{VPS}:7000"
[[link]]
name = "fibre"
bind = "wan1"
[[link]]
name = "lte"
bind = "wan2"
''')

    # ------------------------------------------------------------------ daemons

    def start(self, which: str) -> None:
        role, ns = ("gateway", "vps") if which == "gateway" else ("client", "site")
        proc = self.ns.popen(ns, [*BRAID, role, "-c", str(self.dir / f"{role}.toml")],
                             stderr=self.logs[role])
        if which == "gateway":
            self.gateway = proc
            wait_for(lambda: (self.dir / "gw.sock").exists(), 10, "the gateway's control socket")
        else:
            self.client = proc

    def stop(self, which: str) -> None:
        proc = self.gateway if which == "gateway" else self.client
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)

    def restart(self, which: str) -> None:
        self.stop(which)
        self.start(which)

    def up(self) -> None:
        self.start("gateway")
        self.start("client")
        wait_for(self.lan_reaches_server, 20, "a ping from the LAN host to the server")
        wait_for(lambda: self.links_up({"fibre", "lte"}), 10, "both links up")

    def lan_reaches_server(self) -> bool:
        return self.ns.run("lan", ["ping", "-c", "1", "-W", "1", SERVER], check=False).returncode == 0

    def status(self) -> dict[str, Any]:
        out = self.ns.run("site", [*BRAID, "status", "--json", "-s", str(self.dir / "cl.sock")],
                          check=False)
        if out.returncode != 0:
            return {}
        return json.loads(out.stdout)

    def links(self) -> dict[str, dict[str, Any]]:
        peers = self.status().get("peers", [])
        return {lk["name"]: lk for lk in peers[0]["links"]} if peers else {}

    def links_up(self, names: set[str]) -> bool:
        links = self.links()
        return all(links.get(n, {}).get("state") == "up" for n in names)

    # ------------------------------------------------------------------ measurements

    def ping_gap(self, seconds: float, event: Callable[[], None], at: float = 1.0) -> float:
        """Ping the server from the LAN host every 50 ms for `seconds`, running `event` after
        `at` seconds; the longest time between two replies (s)."""
        ping = self.ns.popen("lan", ["ping", "-D", "-n", "-i", "0.05", "-W", "1", "-w", str(int(seconds)),
                                     SERVER], stdout=subprocess.PIPE, text=True)
        time.sleep(at)
        event()
        return self._gap(ping, seconds)

    def link_event(self, link: str, event: Callable[[], None], seconds: float = 8.0
                   ) -> tuple[float, float]:
        """(longest ping gap, seconds from the event until the link was re-bound and is up and
        carrying again), pinging as `ping_gap` does."""
        ping = self.ns.popen("lan", ["ping", "-D", "-n", "-i", "0.05", "-W", "1", "-w", str(int(seconds)),
                                     SERVER], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        rebound = self.status().get("counters", {}).get("links_rebound", 0)
        start = time.monotonic()
        event()
        seen_rebind: int | None = None
        back = float("nan")
        while time.monotonic() - start < seconds - 1.5:
            status = self.status()
            lk = {x["name"]: x for x in status.get("peers", [{}])[0].get("links", [])}.get(link, {})
            if seen_rebind is None and status.get("counters", {}).get("links_rebound", 0) > rebound:
                seen_rebind = lk.get("rx_bytes", 0)
            elif seen_rebind is not None and lk.get("state") == "up" and lk.get("rx_bytes", 0) > seen_rebind:
                back = time.monotonic() - start
                break
            time.sleep(0.05)
        return self._gap(ping, seconds), back

    def _gap(self, ping: subprocess.Popen, seconds: float) -> float:
        out, _ = ping.communicate(timeout=seconds + 30)
        stamps = [float(m.group(1)) for line in out.splitlines() if (m := PING_TIME.match(line))]
        if len(stamps) < 10:
            raise LabError(f"pings from the LAN host mostly failed: {out[-500:]}")
        return max(b - a for a, b in itertools.pairwise(stamps))

    def iperf(self, seconds: int, reverse: bool = False) -> list[float]:
        """One TCP flow LAN host -> server (or back): Mbit/s per second."""
        server = self.ns.popen("server", ["iperf3", "-s", "-1", "-B", SERVER],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        args = ["iperf3", "-c", SERVER, "-t", str(seconds), "-J", "-C", "cubic"]
        out = self.ns.run("lan", args + (["-R"] if reverse else []), timeout=seconds + 30)
        server.wait(timeout=10)
        result = json.loads(out.stdout)
        return [i["sum"]["bits_per_second"] / 1e6 for i in result["intervals"]]

    def server_sees(self) -> str:
        """The source address the server sees for the LAN host's TCP connection."""
        script = ("import socket; s=socket.create_server(('0.0.0.0', 9100)); c,a=s.accept(); "
                  "print(a[0]); c.close()")
        server = self.ns.popen("server", [sys.executable, "-c", script], stdout=subprocess.PIPE,
                               text=True)
        time.sleep(0.5)
        self.ns.run("lan", [sys.executable, "-c",
                            f"import socket; socket.create_connection(('{SERVER}', 9100), 5).close()"])
        out, _ = server.communicate(timeout=10)
        return out.strip()

    # ------------------------------------------------------------------ events

    def renew_wan1(self, new: str = "100.64.1.3") -> None:
        """A DHCP renew that hands wan1 a new address (the ISP routes it too)."""
        ns = self.ns
        ns.run("site", ["ip", "addr", "del", "100.64.1.2/24", "dev", "wan1"])  # as dhclient does
        ns.run("site", ["ip", "addr", "add", f"{new}/24", "dev", "wan1"])
        ns.run("site", ["ip", "route", "replace", "default", "via", "100.64.1.1", "dev", "wan1",
                        "metric", "100"])

    def recreate_wan1(self, down_for: float = 0.5, bare_for: float = 0.3) -> None:
        """wan1 deleted and created again (a PPPoE reconnect): a new ifindex, same name, up
        for `bare_for` s before its address arrives."""
        self.ns.run("site", ["ip", "link", "del", "wan1"])
        time.sleep(down_for)
        self._wan("wan1", "isp1", "100.64.1.2/24", "100.64.1.1/24", bare_for)

    def cut_upstream(self, wan: str, both: bool = False) -> None:
        """What the site sends on this uplink is lost; what comes back still arrives (unless
        `both`: the uplink is dead both ways)."""
        isp = "isp1" if wan == "wan1" else "cgnat"
        rule = '  iifname "s0" drop\n' + ('  oifname "s0" drop\n' if both else "")
        subprocess.run(self.ns.cmd(isp, ["nft", "-f", "-"]), check=True, text=True, input=(
            "table inet oneway {\n chain oneway_drop {\n  type filter hook forward priority 0;\n"
            + rule + " }\n}\n"))

    def heal_upstream(self, wan: str) -> None:
        isp = "isp1" if wan == "wan1" else "cgnat"
        self.ns.run(isp, ["nft", "delete", "table", "inet", "oneway"], check=False)

    def close(self) -> None:
        self.ns.close()
        for f in self.logs.values():
            f.close()


def run_site(workdir: Path, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Every measurement of issue 11 on a fresh site, as one result."""
    lab = SiteLab(workdir)
    try:
        progress("building the site, ISPs, core, VPS and server namespaces")
        lab.build()
        lab.up()
        result: dict[str, Any] = {"server_sees": lab.server_sees()}
        progress("LAN -> server goodput, up and down")
        up, down = lab.iperf(8), lab.iperf(8, reverse=True)
        result["goodput_up_mbit"] = round(statistics.mean(up[2:]), 1)
        result["goodput_down_mbit"] = round(statistics.mean(down[2:]), 1)
        result["links_mbit"] = RATES
        outages = []
        for which in ("gateway", "client"):
            progress(f"{which} restart")
            gap = lab.ping_gap(8, lambda w=which: lab.restart(w))  # type: ignore[misc]
            outages.append(Outage(f"{which} restart", round(gap * 1000)))
            wait_for(lambda: lab.links_up({"fibre", "lte"}), 15, "both links up")
        for name, event in (("DHCP renew (wan1)", lab.renew_wan1), ("wan1 re-created", lab.recreate_wan1)):
            progress(name)
            gap, back = lab.link_event("fibre", event)
            outages.append(Outage(name, round(gap * 1000), round(back * 1000)))
            wait_for(lambda: lab.links_up({"fibre", "lte"}), 15, "both links up")
        result["outages"] = [o.__dict__ for o in outages]
        progress("one-way failure: the 4G's upstream dies during an upload")
        result["oneway"] = oneway_failure(lab).__dict__
        return result
    finally:
        lab.close()


@dataclass
class OneWay:
    """An upload while the 4G's upstream dies alone, against the fibre alone."""

    fibre_alone_mbit: float  # one flow's goodput with the 4G dead both ways
    before_mbit: float  # goodput over both links, the second before the cut
    series: list[tuple[float, float]]  # (seconds from the cut to an interval's end, Mbit/s)
    back_after: float | None  # seconds from the cut until goodput is back to RECOVERED x fibre
    lte_during: dict[str, str]  # the 4G's state per direction (braid status) 1.5 s after the cut
    worst_second_after: float | None  # the lowest whole second's mean from 1 s after the cut

    RECOVERED = 0.8
    WINDOW = 0.5  # goodput is judged over this long (one 0.1 s interval is one TCP burst)

    @classmethod
    def judge(cls, fibre: float, series: list[tuple[float, float]], during: dict[str, str]
              ) -> OneWay:
        before = [m for t, m in series if -1.0 < t <= 0.0]
        after = [(t, m) for t, m in series if t >= INTERVAL]  # intervals wholly after the cut
        n = round(cls.WINDOW / INTERVAL)
        back = None
        for i in range(len(after) - n + 1):
            if statistics.mean(m for _, m in after[i:i + n]) >= cls.RECOVERED * fibre:
                back = round(after[i + n - 1][0], 2)  # the end of the first window back
                break
        late = [m for t, m in after if t >= 1.0 + INTERVAL]  # intervals wholly 1 s after the cut
        per_s = round(1.0 / INTERVAL)
        whole = [statistics.mean(late[i:i + per_s]) for i in range(0, len(late) - per_s + 1, per_s)]
        return cls(round(fibre, 1), round(statistics.mean(before or [0.0]), 1),
                   [(round(t, 2), round(m, 1)) for t, m in series], back, during,
                   round(min(whole), 1) if whole else None)


INTERVAL = 0.1  # iperf3's shortest report interval
IPERF_LINE = re.compile(r"\]\s+(\d+\.\d+)-(\d+\.\d+)\s+sec.*?([\d.]+) ([KMG])bits/sec")


def timed_upload(lab: SiteLab, seconds: float, event_at: float, event: Callable[[], None]
                 ) -> list[tuple[float, float]]:
    """One TCP flow LAN host -> server, its goodput as the server receives it every INTERVAL:
    (the interval's end in seconds from `event`, which runs `event_at` seconds in, Mbit/s).
    Each of the server's lines is stamped when iperf3 prints it, on the event's clock."""
    import threading

    server = lab.ns.popen("server", ["iperf3", "-s", "-1", "-B", SERVER, "-i", str(INTERVAL),
                                     "--forceflush", "-f", "m"], stdout=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            lines.append((time.monotonic(), line))

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)
    client = lab.ns.popen("lan", ["iperf3", "-c", SERVER, "-t", str(seconds), "-C", "cubic"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(event_at)
    at = time.monotonic()
    event()  # (it may take a while: the flow goes on meanwhile)
    client.wait(timeout=seconds + 30)
    server.wait(timeout=10)
    reader.join(timeout=10)
    scale = {"K": 1e-3, "M": 1.0, "G": 1e3}
    series = []
    for stamp, line in lines:
        m = IPERF_LINE.search(line)
        if m and "sender" not in line and "receiver" not in line:
            series.append((stamp - at, float(m.group(3)) * scale[m.group(4)]))
    if len(series) < seconds / INTERVAL / 2:
        raise LabError(f"iperf3 reported {len(series)} intervals of {seconds / INTERVAL:.0f}")
    return series


def oneway_failure(lab: SiteLab) -> OneWay:
    """The fibre alone (the 4G dead both ways), then an upload over both during which the
    4G's upstream dies alone."""
    lab.cut_upstream("wan2", both=True)
    try:
        wait_for(lambda: lab.links().get("lte", {}).get("state") != "up", 10, "the 4G seen dead")
        fibre = statistics.mean(lab.iperf(5)[1:])
    finally:
        lab.heal_upstream("wan2")
    wait_for(lambda: lab.links_up({"fibre", "lte"}), 15, "both links up")
    during: dict[str, str] = {}

    def cut() -> None:
        lab.cut_upstream("wan2")
        time.sleep(1.5)
        lte = lab.links().get("lte", {})
        during.update({k: lte.get(k, "?") for k in ("state", "state_tx", "state_rx")})

    try:
        series = timed_upload(lab, 7, 3.0, cut)
    finally:
        lab.heal_upstream("wan2")
    return OneWay.judge(fibre, series, during)
