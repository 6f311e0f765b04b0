"""Links added, removed and given new roles while the tunnel runs (a reload), in virtual
time: nothing in flight is lost, the links that stay keep their state, and both ends agree
on the new set through a handshake."""

from braid.core.link import LinkConfig
from braid.testing.fakenet import FakeLink, FakeNet
from tests.helpers import packet_seq
from tests.sim.test_faults import Pinger


def _net() -> FakeNet:
    links = {"fibre": FakeLink(rate_bps=20e6, delay=0.010),
             "lte": FakeLink(rate_bps=10e6, delay=0.030, jitter=0.005),
             "wifi": FakeLink(rate_bps=15e6, delay=0.015)}
    net = FakeNet(links, seed=5, warmup=False)
    net.run_until(0.5)
    assert net.client.peer.established
    return net


def _names(bond) -> list[str]:
    return [lk.name for lk in bond.links]


def _lost(net: FakeNet, ping: Pinger) -> tuple[int, int]:
    up = {packet_seq(p) for p in net.to_gateway}
    down = {packet_seq(p) for p in net.to_client}
    return ping.n - len(up), ping.n - len(down)


def test_links_removed_and_added_live_lose_no_packet():
    net = _net()
    ping = Pinger(net, every=0.01)
    ping.run(2.0)
    fibre = net.client.peer.bond.link(0)
    net.client.set_links([LinkConfig("fibre", 0), LinkConfig("lte", 1)], net.now)  # wifi out
    ping.run(4.0)
    gw = net.gateway.peers["site"]
    assert _names(net.client.peer.bond) == _names(gw.bond) == ["fibre", "lte"]
    # lte out, wifi back in (at its old id), the 4G's id left as a gap; fibre a backup
    net.client.set_links([LinkConfig("fibre", 0, role="backup"), LinkConfig("wifi", 2)], net.now)
    ping.run(7.0)
    net.run_until(7.5)  # the last pings arrive
    assert _names(net.client.peer.bond) == _names(gw.bond) == ["fibre", "wifi"]
    assert net.client.peer.bond.link(0) is fibre  # kept, with what it had measured
    assert fibre.standby and net.client.peer.bond.link(2).usable
    lost = _lost(net, ping)
    print(f"{ping.n} pings each way across two link changes: lost up {lost[0]}, down {lost[1]}; "
          f"handshakes {net.client.counters['handshakes']}")
    assert lost == (0, 0)
    assert net.gateway.peers["site"] is gw  # the session carried on
