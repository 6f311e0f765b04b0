"""Garbage, forgeries, replays, unknown clients and spoofed sources are counted and dropped,
and never change state."""

import ipaddress
import os

from braid.core import noise, wire
from braid.core.cookie import with_macs
from braid.core.gateway import ClientEntry, GatewayCore, GatewayParams
from braid.testing.fakenet import FakeLink, FakeNet
from tests.helpers import udp_packet


def _net() -> FakeNet:
    net = FakeNet({"a": FakeLink(), "b": FakeLink()}, seed=11)
    net.run_until(0.5)
    assert net.client.peer.established
    return net


def test_garbage_and_truncated_datagrams_are_counted():
    net = _net()
    gw = net.gateway
    for raw in (b"", b"\x03" + os.urandom(5), os.urandom(100), b"\x01" + os.urandom(150)):
        gw.on_datagram(("198.51.100.9", 1), raw, net.now)
    dropped = ("garbage", "handshake_failed", "unknown_index", "bad_mac")
    assert sum(gw.counters[c] for c in dropped) == 4
    assert gw.counters["bad_mac"] == 1  # the junk initiation cost one keyed hash, no DH
    assert gw.packets_to_deliver() == []


def test_forged_transport_is_dropped_and_teaches_no_address():
    net = _net()
    peer = net.gateway.peers["site"]
    addrs_before = {i: peer.sources.addresses(i) for i in range(2)}
    index = peer.current.local_index
    forged = wire.encode_transport_header(index, 0, 10_000) + os.urandom(60)
    net.gateway.on_datagram(("203.0.113.66", 6666), forged, net.now)
    assert peer.stats.forged == 1
    assert {i: peer.sources.addresses(i) for i in range(2)} == addrs_before
    assert net.gateway.packets_to_deliver() == []


def test_replayed_transport_is_dropped():
    net = _net()
    pull = net.client.datagrams_to_send
    captured = []

    def recording(now: float) -> list:
        out = pull(now)
        captured.extend(out)
        return out

    net.client.datagrams_to_send = recording  # type: ignore[method-assign]
    net.send_up(udp_packet(1))
    net.run_until(net.now + 0.2)
    gw_peer = net.gateway.peers["site"]
    delivered = len(net.to_gateway)
    for dg in captured:
        net.gateway.on_datagram(("192.0.2.1", 40000), dg.data, net.now)
    assert gw_peer.stats.replayed >= 1
    net.run_until(net.now + 0.1)
    assert len(net.to_gateway) == delivered


def test_spoofed_inner_source_is_dropped():
    net = _net()
    net.send_up(udp_packet(1, src="10.77.0.99"))
    net.send_up(udp_packet(2, src="10.77.0.2"))
    net.run_until(net.now + 0.2)
    assert [p[12:16] for p in net.to_gateway] == [ipaddress.ip_address("10.77.0.2").packed]
    assert net.gateway.counters["spoofed_source"] == 1


def test_unknown_client_key_gets_no_answer():
    gw_key = os.urandom(32)
    known = ClientEntry("known", noise.public_key(os.urandom(32)), ())
    gw = GatewayCore(GatewayParams(gw_key, (known,)), 0.0, random=os.urandom)
    from braid.core.handshake import PROLOGUE, InitPayload

    payload = InitPayload(1, 1, 0, ("x",)).encode()
    e, s, p, _ = noise.initiator_write(os.urandom(32), noise.public_key(gw_key), os.urandom(32),
                                       payload, PROLOGUE)
    msg = with_macs(wire.HandshakeInit(1, e, s, p).encode_body(), noise.public_key(gw_key), None)
    gw.on_datagram(("198.51.100.1", 9), msg, 0.0)
    assert gw.counters["unknown_client"] == 1
    assert gw.datagrams_to_send(0.0) == []


def test_replayed_initiation_is_refused():
    net = _net()
    before = net.gateway.counters["stale_initiation"]
    # the client's first initiations went out on both links; replay the one the gateway answered
    gw = net.gateway
    handshakes = gw.counters["handshakes"]
    net.client.peer.current = None  # force a new handshake, then capture it
    net.client.on_timer(net.now + 2)
    init = next(dg for dg in net.client.datagrams_to_send(net.now + 2) if dg.data[0] == wire.HANDSHAKE_INIT)
    gw.on_datagram(("192.0.2.1", 40000), init.data, net.now + 2)
    gw.on_datagram(("192.0.2.1", 40000), init.data, net.now + 2)
    assert gw.counters["handshakes"] == handshakes + 1
    assert gw.counters["stale_initiation"] == before + 1


def test_two_clients_on_one_gateway_are_isolated():
    """Each client gets only the packets routed to its addresses and may send only from them."""
    from braid.core.client import ClientCore, ClientParams
    from braid.core.link import LinkConfig
    from tests.helpers import packet_seq

    rnd = __import__("random").Random(5)
    gw_key = rnd.randbytes(32)
    keys = {"a": rnd.randbytes(32), "b": rnd.randbytes(32)}
    entries = tuple(ClientEntry(n, noise.public_key(k), (ipaddress.ip_network(f"10.77.0.{i + 2}/32"),))
                    for i, (n, k) in enumerate(keys.items()))
    gw = GatewayCore(GatewayParams(gw_key, entries), 0.0, random=rnd.randbytes)
    clients = {n: ClientCore(ClientParams(k, noise.public_key(gw_key), (LinkConfig("l0", 0),)), 0.0,
                             random=rnd.randbytes, wall_offset=1.7e9) for n, k in keys.items()}
    addr = {"a": ("192.0.2.10", 1000), "b": ("192.0.2.20", 2000)}
    got: dict[str, list[bytes]] = {"a": [], "b": []}

    def run(t: float) -> None:
        for _ in range(50):
            moved = False
            for n, c in clients.items():
                c.on_timer(t)
                for dg in c.datagrams_to_send(t):
                    gw.on_datagram(addr[n], dg.data, t)
                    moved = True
            for dg in gw.datagrams_to_send(t):
                owner = next(n for n in addr if addr[n] == dg.addr)
                clients[owner].on_datagram(dg.link_id, dg.data, t)
                moved = True
            gw.on_timer(t)
            for n, c in clients.items():
                got[n] += c.packets_to_deliver()
            if not moved:
                return

    for k in range(40):
        run(k * 0.01)
    assert all(c.peer.established for c in clients.values())
    gw.on_tun_packet(udp_packet(1, src="10.77.0.1", dst="10.77.0.2"), 0.5)
    gw.on_tun_packet(udp_packet(2, src="10.77.0.1", dst="10.77.0.3"), 0.5)
    clients["a"].on_tun_packet(udp_packet(3, src="10.77.0.3", dst="10.77.0.1"), 0.5)  # a claims b's address
    clients["b"].on_tun_packet(udp_packet(4, src="10.77.0.3", dst="10.77.0.1"), 0.5)
    clients["a"].on_tun_packet(udp_packet(5, src="10.77.0.2", dst="10.77.0.3"), 0.5)  # a to b
    for k in range(50, 80):
        run(k * 0.01)
    assert [packet_seq(p) for p in got["a"]] == [1]
    assert [packet_seq(p) for p in got["b"]] == [2]
    assert [packet_seq(p) for p in gw.packets_to_deliver()] == [4]  # braid itself drops a's packet to b
    assert gw.counters["spoofed_source"] == 1
    assert gw.counters["client_to_client"] == 1


def test_rapid_handshakes_leave_no_dead_keys_indexed():
    """Each confirmed handshake displaces the keys before the previous ones: the gateway
    keeps at most current, previous and pending per client (issue 12: 2000 handshakes
    left 1999 dead entries)."""
    net = _net()
    for _ in range(300):
        net.restart_client()  # a client that handshakes as fast as it can
        net.run_until(net.now + 0.05)
    assert net.gateway.counters["handshakes"] >= 150  # the rest: over the per-client rate
    assert net.gateway.counters["rate_limited"] > 0
    assert net.gateway.keypair_count() <= 3


def test_a_client_forging_its_source_cannot_make_the_gateway_an_amplifier():
    """Issue 12: an authenticated client forged its source address (and receiver reports) and
    the gateway sent 4191 times what it received to the victim. An address that has not
    echoed the gateway's challenge gets at most 3x what came from it."""
    from tests.helpers import udp_packet

    net = FakeNet({"a": FakeLink(rate_bps=20e6), "b": FakeLink(rate_bps=20e6)}, seed=4)
    net.run_until(0.5)
    victim = ("198.51.100.99", 53)
    net.spoof[1] = victim  # everything link b sends now claims to come from the victim
    t = net.now
    while t < 3.5:
        for _ in range(2):  # downstream bulk, so the gateway has plenty to send
            net.send_down(udp_packet(int(t * 1000), src="10.77.0.1", dst="10.77.0.2"))
        t += 0.001
        net.run_until(t)
    got, sent = net.received_from.get(victim, 0), net.sent_elsewhere.get(victim, 0)
    print(f"from the forged source {got} bytes, to it {sent} bytes ({sent / max(got, 1):.2f}x)")
    assert got > 10_000 and sent <= 3 * got
    assert not net.gateway.peers["site"].sources.validated(victim)
    assert len(net.to_client) > 1000  # link a still carries the traffic


def test_a_link_name_from_the_network_cannot_forge_a_log_line():
    import pytest

    from braid.core.handshake import InitPayload

    for name in ("lte\n2026-12-01 braid.daemon INFO forged", "", "x" * 33, "a\x1b[2J"):
        raw = InitPayload(1, 1, 0, ("ok",)).encode()[:-3] + bytes((len(name.encode()),)) + name.encode()
        with pytest.raises(wire.WireError):
            InitPayload.decode(raw)
    assert InitPayload.decode(InitPayload(1, 1, 0, ("lte-2.a_b",)).encode()).link_names == ("lte-2.a_b",)


def test_status_series_are_kept_only_for_links_that_exist():
    from braid.control.metrics import Throughput

    tput = Throughput()
    for i in range(100):  # a client that reconnects with new link names each time
        tput.sample(float(i), {f"site/l{i}/tx": i, "site/fixed/tx": i})
    assert tput.rates("site/l5/tx")["max_bps"] == 0.0
    assert tput.rates("site/fixed/tx")["current_bps"] == 8.0


def test_an_address_behind_a_satellite_is_validated_though_its_echo_is_slower_than_a_retry():
    """A 600 ms round trip is longer than the first challenge retry: the echo of an earlier
    token must still validate (else the gateway held a satellite link to 3x forever)."""
    net = FakeNet({"sat": FakeLink(rate_bps=25e6, delay=0.300), "lte": FakeLink(delay=0.030)},
                  seed=6, warmup=False)
    net.run_until(4.0)
    sources = net.gateway.peers["site"].sources
    assert sources.validated(("192.0.2.1", 40000))  # the satellite's
    assert sources.validated(("192.0.2.2", 40001))
