"""`braid status` and `braid top` fit 80 columns; the sparkline scales to its history."""

from braid.cli.status import lines as status_lines
from braid.cli.top import SPARK_WIDTH, View, sparkline

RATES = {"current_bps": 18.2e6, "avg_bps": 17e6, "max_bps": 19.5e6}


def _reply(role="client", links=("fibre-long-name", "lte")):
    return {
        "ok": True, "role": role, "tun": "braid-cl0", "mtu": 8586, "uptime_s": 1234.5,
        "handshake": "established",
        "counters": {f"counter_number_{i}": i * 1000 for i in range(12)},
        "events": [{"t": 1.7e9, "event": "link lte tx suspect: the peer does not hear it " * 3}],
        "peers": [{
            "peer": "gateway", "established": True,
            "counters": {"resent": 12, "queue_drops": 3, "forged": 0, **{f"c{i}": i for i in range(20)}},
            "links": [{"name": n, "id": i, "state": "up", "state_rx": "up", "state_tx": "suspect",
                       "rtt_ms": 123.45, "min_rtt_ms": 99.9, "loss": 0.0123, "capacity_bps": 123.4e6,
                       "pacing_bps": 120e6, "queue_delay_ms": 12.3, "share": 0.66, "warming": False,
                       "local_address": "100.64.1.2", "addresses": [], "tx_throughput": RATES,
                       "rx_throughput": RATES} for i, n in enumerate(links)],
        }],
    }


def test_status_fits_80_columns():
    out = status_lines(_reply())
    assert all(len(line) <= 80 for line in out)
    assert any("fibre-long-name: up (rx up, tx suspect)" in line for line in out)


def test_top_fits_80_columns_and_shows_each_link():
    view = View()
    reply = _reply()
    for _ in range(70):
        view.update(reply)
    out = [text for text, _ in view.lines(reply, 80)]
    assert all(len(line) <= 80 for line in out), [len(x) for x in out]
    assert sum(1 for line in out if line.startswith((" fibre-lon", " lte "))) == 2
    assert any("events" in line for line in out)


def test_sparkline_scales_to_its_maximum_and_is_blank_without_history():
    assert sparkline([]) == " " * SPARK_WIDTH
    line = sparkline([0.0] * 30 + [10e6] * 30)
    assert len(line) == SPARK_WIDTH and line[0] == "▁" and line[-1] == "█"
    assert sparkline([5e6])[-1] == "█" and sparkline([5e6])[0] == " "
    assert set(sparkline([20e3] * 60)) <= set("▁▂")  # probes only: flat at the bottom


def test_the_verbose_summary_names_each_link_with_its_rates():
    from braid.control.metrics import Throughput
    from braid.control.status import link_counters, summary_line
    from braid.testing.fakenet import FakeLink, FakeNet

    net = FakeNet({"fibre": FakeLink(rate_bps=20e6, delay=0.01), "lte": FakeLink(rate_bps=5e6, delay=0.03)})
    tput = Throughput()
    net.run_until(1.0)
    tput.sample(net.now, link_counters(net.client.peer))
    net.run_until(2.0)
    tput.sample(net.now, link_counters(net.client.peer))
    line = summary_line(net.client.peer, tput, net.now)
    assert line.startswith("gateway: fibre up tx ") and "| lte up tx " in line and "rtt " in line
    assert "\n" not in line


def test_status_shows_no_redundancy_on_links_that_do_not_lose():
    from braid.control.metrics import Throughput
    from braid.control.status import peer_status
    from braid.testing.fakenet import FakeLink, FakeNet

    net = FakeNet({"fibre": FakeLink(rate_bps=20e6, delay=0.01), "lte": FakeLink(rate_bps=5e6, delay=0.03)})
    net.run_until(2.0)
    view = peer_status(net.client.peer, Throughput(), net.now)
    assert not any(link["copying"] for link in view["links"])
    out = status_lines({"role": "client", "tun": "t", "mtu": 1400, "uptime_s": 2, "counters": {},
                        "peers": [view]})
    assert "  redundancy: no link lossy; realtime copies 0 (0 kB), resend copies 0 (0 kB)" in out
