"""The Prometheus exposition of a status snapshot, and its HTTP server."""

import urllib.request

from braid.control.prometheus import MetricsServer, render

STATUS = {
    "ok": True, "role": "client", "uptime_s": 12.5,
    "counters": {"handshakes": 3, "bad_mac": 0, "internal_errors": 0},
    "peers": [{
        "peer": "gateway", "established": True,
        "counters": {"resent": 7, "queue_drops": 1, "reorder_held": 4},
        "links": [{"name": "fibre", "state_rx": "up", "state_tx": "suspect", "rtt_ms": 12.5,
                   "min_rtt_ms": 10.0, "loss": 0.01, "capacity_bps": 20e6, "pacing_bps": 19e6,
                   "delivery_bps": 18e6, "queue_delay_ms": None, "share": 0.7,
                   "tx_bytes": 1000, "rx_bytes": 2000, "tx_packets": 10, "rx_packets": 20}],
    }],
}


def test_every_family_has_help_and_type_and_samples_parse():
    text = render(STATUS)
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif not line.startswith("#"):
            metric, value = line.rsplit(" ", 1)
            float(value)
            assert metric.split("{")[0] in names, line
    assert 'braid_link_rtt_seconds{peer="gateway",link="fibre"} 0.0125' in text
    assert 'braid_link_state{peer="gateway",link="fibre",direction="tx"} 0.5' in text
    assert 'braid_peer_events_total{peer="gateway",event="resent"} 7' in text
    assert 'braid_peer_level{peer="gateway",event="reorder_held"} 4' in text
    assert "braid_link_queue_delay_seconds{" not in text  # an unknown value is left out


def test_label_values_are_escaped():
    status = dict(STATUS, peers=[dict(STATUS["peers"][0], peer='a"b\\c\nd')])
    assert 'peer="a\\"b\\\\c\\nd"' in render(status)


def test_the_server_answers_scrapes_from_a_snapshot():
    calls = []

    def snapshot():
        calls.append(1)
        return STATUS

    server = MetricsServer("127.0.0.1", 0, snapshot)
    try:
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
            body = reply.read().decode()
            assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "braid_info" in body and calls == [1]
    finally:
        server.close()
