"""Link roles and idle cost, in virtual time: a backup link carries nothing while a primary
is usable, takes over as fast as a primary would, gives way again; idle links cost little."""

import pytest

from braid.testing.fakenet import FakeLink, FakeNet
from tests.sim.test_faults import Pinger

DAY = 86_400


def _net(roles: dict[str, str]) -> FakeNet:
    links = {"fibre": FakeLink(rate_bps=20e6, delay=0.010),
             "lte": FakeLink(rate_bps=10e6, delay=0.030, jitter=0.005)}
    net = FakeNet(links, seed=3, warmup=False, roles=roles)
    net.run_until(0.5)
    assert net.client.peer.established
    return net


def _bytes(net: FakeNet, link: str) -> int:
    return net.wire_bytes.get((link, "up"), 0) + net.wire_bytes.get((link, "down"), 0)


def test_idle_links_cost_little_a_day():
    net = _net({"lte": "backup"})
    net.run_until(30.0)  # nothing to send: the tunnel goes idle after 5 s
    start = {n: _bytes(net, n) for n in ("fibre", "lte")}
    net.run_until(330.0)
    per_day = {n: (_bytes(net, n) - start[n]) / 300 * DAY / 1e6 for n in start}
    print(f"idle: fibre (primary) {per_day['fibre']:.1f} MB/day, lte (backup) {per_day['lte']:.2f} MB/day")
    assert per_day["fibre"] <= 30 and per_day["lte"] <= 2
    assert all(lk.healthy for lk in net.client.peer.bond.links)  # still known to work
    assert net.client.counters["handshakes"] <= 1 + 330 // 120  # only rekeys, no silence alarm
    assert all(lk.healthy for lk in net.gateway.peers["site"].bond.links)


def _failover_gap(roles: dict[str, str]) -> tuple[float, float, FakeNet]:
    net = _net(roles)
    ping = Pinger(net, every=0.02)
    ping.run(3.0)
    lte_before = _bytes(net, "lte")
    ping.run(5.0)
    standby_bytes = _bytes(net, "lte") - lte_before
    net.links["fibre"].up = False
    cut = net.now
    ping.run(cut + 5.0)
    return ping.longest_gap(cut, net.now), standby_bytes, net


def test_a_backup_carries_nothing_then_takes_over_as_fast_as_a_primary():
    gap_backup, standby_bytes, net = _failover_gap({"lte": "backup"})
    gap_primary, _, _ = _failover_gap({})
    print(f"fibre cut: longest ping gap {gap_backup * 1000:.0f} ms with the 4G as backup, "
          f"{gap_primary * 1000:.0f} ms with it as a primary; the standby 4G carried "
          f"{standby_bytes} bytes in 2 s of pings")
    assert standby_bytes < 2_000  # a few probes, no traffic
    assert gap_backup <= gap_primary + 0.1
    lte = net.client.peer.bond.links[1]
    assert lte.usable and not lte.standby
    net.links["fibre"].up = True  # the primary returns: the backup gives way
    ping = Pinger(net, every=0.02)
    ping.run(net.now + 3.0)
    before = _bytes(net, "lte")
    ping.run(net.now + 2.0)
    assert lte.standby and _bytes(net, "lte") - before < 2_000
    assert ping.longest_gap(net.now - 5.0, net.now) <= 0.1


@pytest.mark.parametrize("idle_for", [8.0, 60.0])
def test_traffic_after_an_idle_time_flows_at_once(idle_for):
    net = _net({})
    net.run_until(1.0 + idle_for)
    ping = Pinger(net, every=0.02)
    start = net.now
    ping.run(start + 2.0)
    assert ping.outage_after(start) <= 0.05  # the links were still known to work
    assert ping.longest_gap(start, net.now) <= 0.05
