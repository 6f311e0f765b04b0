"""Attacks on a live gateway in namespaces: handshake floods (junk, and well-formed ones
from unknown keys) beside one unshaped TCP flow through the tunnel, and a local control
client that drips its request. Each test prints what it measured.

Topology: site --up0-- gw --a0-- attacker (veth pairs). up0 is shaped to 200 Mbit/s with
tbf, so that the calm transfer is bounded by the link, not by two busy cores: what a flood
costs then shows as lost throughput or added delay. Each attack is measured between two
calm runs of its own (the machine's load drifts over minutes)."""

from __future__ import annotations

import json
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from braid.lab.netns import Namespaces
from tests.integration.test_tunnel import BRAID, _key, _wait_for

pytestmark = pytest.mark.root
FLOOD_RATE = 15_000
LINK_MBIT = 200
RTT = re.compile(r"time=([\d.]+) ms")
TBF_LATENCY_MS = 20  # up0's tbf queue: a ping shares it with the flow, so one 6 s run's p99
# lands anywhere in it (calm runs here read p99 13-35 ms); an attack's harm must exceed it


class Target:
    def __init__(self, ns: Namespaces, workdir: Path) -> None:
        self.ns, self.dir = ns, workdir
        for role in ("site", "gw", "atk"):
            ns.add(role)
        ns.veth("site", "up0", "gw", "up0")
        ns.veth("atk", "a0", "gw", "a0")
        ns.run("site", ["ip", "addr", "add", "10.210.0.1/30", "dev", "up0"])
        ns.run("gw", ["ip", "addr", "add", "10.210.0.2/30", "dev", "up0"])
        ns.run("atk", ["ip", "addr", "add", "10.211.0.1/30", "dev", "a0"])
        ns.run("gw", ["ip", "addr", "add", "10.211.0.2/30", "dev", "a0"])
        for role in ("site", "gw"):
            ns.run(role, ["tc", "qdisc", "add", "dev", "up0", "root", "tbf", "rate", f"{LINK_MBIT}mbit",
                          "burst", "64kb", "latency", f"{TBF_LATENCY_MS}ms"])
        gk, self.gw_public = _key()
        ck, cp = _key()
        self.client_key = ck
        (workdir / "g.toml").write_text(f'''[gateway]
private_key = "{gk}"
listen = "0.0.0.0:7000"
address = "10.80.0.1/24"
control = "{workdir}/g.sock"
[[client]]
name = "site"
public_key = "{cp}"
address = "10.80.0.2/32"
''')
        (workdir / "c.toml").write_text(f'''[client]
private_key = "{ck}"
address = "10.80.0.2/24"
control = "{workdir}/c.sock"
state_dir = "{workdir}"
[gateway]
public_key = "{self.gw_public}"
endpoint = "10.210.0.2:7000"
[[link]]
name = "l0"
bind = "up0"
''')
        self.gw_log = open(workdir / "gateway.log", "w")  # noqa: SIM115
        ns.popen("gw", [*BRAID, "gateway", "-c", str(workdir / "g.toml")], stderr=self.gw_log)
        _wait_for(lambda: (workdir / "g.sock").exists(), 10, "the gateway")
        ns.popen("site", [*BRAID, "client", "-c", str(workdir / "c.toml")], stderr=subprocess.DEVNULL)
        ping = ["ping", "-c", "1", "-W", "1", "10.80.0.1"]
        _wait_for(lambda: ns.run("site", ping, check=False).returncode == 0, 15, "a ping through the tunnel")

    def gateway_rss_kb(self) -> int:
        pid = self.ns.run("gw", ["pgrep", "-f", "braid.cli.main gateway"]).stdout.split()[0]
        status = Path(f"/proc/{pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))

    def gateway_status(self) -> dict:
        out = self.ns.run("gw", [*BRAID, "status", "--json", "-s", str(self.dir / "g.sock")])
        return json.loads(out.stdout)

    def measure(self, flood: str | None, seconds: int = 6) -> dict[str, float]:
        """One TCP flow through the tunnel and pings beside it, with a flood from the attacker."""
        attacker = None
        if flood is not None:
            args = [sys.executable, "-m", "braid.lab.attack", "10.211.0.2:7000", flood,
                    str(FLOOD_RATE), str(seconds + 3), self.gw_public]
            attacker = self.ns.popen("atk", args, stdout=subprocess.PIPE, text=True)
            time.sleep(1.0)
        server = self.ns.popen("gw", ["iperf3", "-s", "-1", "-B", "10.80.0.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        pinger = self.ns.popen("site", ["ping", "-n", "-i", "0.02", "-w", str(seconds), "10.80.0.1"],
                               stdout=subprocess.PIPE, text=True)
        out = self.ns.run("site", ["iperf3", "-c", "10.80.0.1", "-t", str(seconds), "-O", "1", "-J"],
                          timeout=seconds + 30)
        server.wait(timeout=10)
        pings, _ = pinger.communicate(timeout=seconds + 10)
        sent = None
        if attacker is not None:
            flood_out, _ = attacker.communicate(timeout=seconds + 20)
            sent = json.loads(flood_out)["datagrams"]
        rtts = sorted(float(m) for m in RTT.findall(pings))
        assert len(rtts) > 50, pings
        return {"mbit": json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6,
                "p50": statistics.median(rtts), "p99": rtts[int(0.99 * (len(rtts) - 1))],
                "flood_sent": float(sent or 0)}


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    ns = Namespaces()
    workdir = tmp_path_factory.mktemp("attack")
    try:
        yield Target(ns, workdir)
    finally:
        ns.close()
        text = (workdir / "gateway.log").read_text() if (workdir / "gateway.log").exists() else ""
        print(f"--- gateway.log\n{text[-2000:]}")


@pytest.fixture(scope="module")
def warm(target):
    target.measure(None, seconds=3)  # the first transfer after start-up: not a reference
    return target


def _show(name: str, m: dict[str, float]) -> str:
    return f"{name}: {m['mbit']:.0f} Mbit/s, ping p50 {m['p50']:.2f} ms p99 {m['p99']:.2f} ms"


Measure = dict[str, float]


def _bracketed(target: Target, attack: Callable[[], Measure]) -> tuple[Measure, Measure]:
    """A calm run on each side of the attack, so that neither the load's drift over the minute
    nor one lucky calm run sets the reference: its p99 is the worse calm one, its rate the mean."""
    before = target.measure(None)
    hit = attack()
    after = target.measure(None)
    print(_show("calm before", before))
    print(_show("calm after", after))
    calm = {"mbit": (before["mbit"] + after["mbit"]) / 2, "p50": max(before["p50"], after["p50"]),
            "p99": max(before["p99"], after["p99"])}
    return calm, hit


def _delay_bound(calm: Measure, factor: float) -> float:
    """The most p99 an attack may read: `factor` times the calm p99 or one link queue more,
    whichever is larger (+2 ms: a busy 2-core host's scheduling noise). A control client or a
    flood that holds the loop shows as hundreds of ms."""
    return max(factor * calm["p99"], calm["p99"] + TBF_LATENCY_MS) + 2.0


@pytest.mark.parametrize("flood", ["junk", "unknown-key"])
def test_a_handshake_flood_does_not_take_the_tunnel_down(warm, flood):
    target = warm
    counters: list[dict[str, int]] = []

    def attack() -> Measure:
        counters.append(target.gateway_status()["counters"])
        hit = target.measure(flood)
        counters.append(target.gateway_status()["counters"])
        return hit

    calm, hit = _bracketed(target, attack)
    before, after = counters
    delta = {k: after[k] - before[k] for k in ("bad_mac", "cookie_replies", "unknown_client",
                                              "handshake_failed", "rate_limited")}
    print(_show(f"{flood} flood at {FLOOD_RATE}/s ({hit['flood_sent']:.0f} sent)", hit), delta)
    assert hit["flood_sent"] >= FLOOD_RATE * 6
    assert hit["mbit"] >= 0.8 * calm["mbit"]
    assert hit["p99"] <= _delay_bound(calm, 2.0)
    if flood == "junk":
        assert delta["bad_mac"] >= FLOOD_RATE * 6 * 0.9
    else:  # past the load threshold no Diffie-Hellman: a few cookie replies, the rest dropped
        assert delta["cookie_replies"] + delta["rate_limited"] >= FLOOD_RATE * 6 * 0.9
        assert delta["unknown_client"] + delta["handshake_failed"] <= 2 * 100
    assert after["internal_errors"] == 0


def test_a_dripping_control_client_does_not_delay_the_tunnel(warm):
    target = warm
    stop = threading.Event()

    def drip() -> None:
        while not stop.is_set():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(target.dir / "g.sock"))
                for byte in b'{"cmd": "status"}':
                    if stop.wait(0.15):
                        return
                    try:
                        s.send(bytes([byte]))
                    except OSError:
                        break

    def attack() -> Measure:
        threads = [threading.Thread(target=drip) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            return target.measure(None)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=5)

    calm, hit = _bracketed(target, attack)
    print(_show("three dripping control clients", hit))
    assert hit["p99"] <= _delay_bound(calm, 1.0)
    assert hit["mbit"] >= 0.8 * calm["mbit"]
    assert target.gateway_status()["ok"]  # the socket still answers once the drips stop


def test_rapid_handshakes_from_one_client_leave_the_gateway_flat(target):
    """5,000 valid initiations from the configured client's key, as fast as it can send them
    (issue 12: 5,806 handshakes left +33 MB that was never freed)."""
    before = target.gateway_rss_kb()
    args = [sys.executable, "-m", "braid.lab.attack", "10.211.0.2:7000", "handshakes", "1000", "5",
            target.gw_public, target.client_key]
    target.ns.run("atk", args, timeout=120)
    time.sleep(1.0)
    after = target.gateway_rss_kb()
    status = target.gateway_status()
    c = status["counters"]
    print(f"gateway RSS {before} kB before 5,000 rapid handshakes, {after} kB after; "
          f"handshakes {c['handshakes']}, rate limited {c['rate_limited']}, keypairs {status['keypairs']}")
    assert after - before < 4_000
    assert status["keypairs"] <= 3
    ping = ["ping", "-c", "3", "-W", "1", "10.80.0.1"]  # the real client is back (it re-handshakes)
    _wait_for(lambda: target.ns.run("site", ping, check=False).returncode == 0, 10, "the real client")


_SPOOF = """table ip braidspoof {
  chain out {
    type filter hook output priority -300; policy accept;
    ip saddr 10.210.0.1 udp dport 7000 notrack ip saddr set VICTIM counter
  }
  chain post {
    type filter hook postrouting priority 300; policy accept;
    ip saddr VICTIM udp dport 7000 counter
  }
  chain pre {
    type filter hook prerouting priority -300; policy accept;
    ip daddr VICTIM counter
  }
}
"""
VICTIM = "10.212.0.9"


def _spoof_counters(target: Target) -> tuple[int, int]:
    """(bytes the client sent as the victim, bytes that reached the victim's address)."""
    out = json.loads(target.ns.run("site", ["nft", "-j", "list", "table", "ip", "braidspoof"]).stdout)
    counts = {}
    for item in out["nftables"]:
        rule = item.get("rule")
        if rule:
            counter = next(e["counter"] for e in rule["expr"] if "counter" in e)
            counts[rule["chain"]] = counter["bytes"]
    return counts["post"], counts["pre"]


def test_a_spoofed_source_gets_at_most_three_times_what_it_sent(target):
    """The client's datagrams (authenticated: it has the key) leave with a victim's source
    address, rewritten statelessly, while a download wants to send the victim 200 Mbit/s:
    the gateway has never had an answer from that address, so it sends it at most 3x the
    bytes it got from it (issue 12: forged reports and a spoofed source once gave x4191)."""
    target.ns.run("gw", ["ip", "route", "add", "10.212.0.0/24", "via", "10.210.0.1", "dev", "up0"])
    server = target.ns.popen("gw", ["iperf3", "-s", "-1", "-B", "10.80.0.1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    client = target.ns.popen("site", ["iperf3", "-c", "10.80.0.1", "-R", "-t", "8"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)  # the download runs at full rate, to the real address
        subprocess.run(target.ns.cmd("site", ["nft", "-f", "-"]), input=_SPOOF.replace("VICTIM", VICTIM),
                       text=True, check=True)
        time.sleep(5.0)
        sent, received = _spoof_counters(target)
    finally:
        target.ns.run("site", ["nft", "delete", "table", "ip", "braidspoof"], check=False)
        client.wait(timeout=30)
        server.wait(timeout=10)
    c = target.gateway_status()["peers"][0]["counters"]
    print(f"spoofed source for 5 s during a download: the client sent {sent} bytes as {VICTIM}, "
          f"the gateway sent {received} bytes there: x{received / max(sent, 1):.2f}; "
          f"datagrams not sent for want of budget: {c['address_limited']}")
    assert sent > 10_000  # the spoof was on: the client kept sending
    assert received <= 3 * sent
    ping = ["ping", "-c", "3", "-W", "1", "10.80.0.1"]  # the spoof gone, the real client is back
    _wait_for(lambda: target.ns.run("site", ping, check=False).returncode == 0, 15, "the real client")
