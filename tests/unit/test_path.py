"""core/path.py PathStats, driven by receiver reports with literal times."""

from braid.core import wire
from braid.core.path import PathStats


def _report(rx_packets: int = 0, rx_bytes: int = 0, echo_ts: int = 0, hold_us: int = 0,
            rx_time_us: int = 0, owd_min_us: int = 0, highest: int = 0) -> wire.Feedback:
    return wire.Feedback(0, rx_packets, rx_bytes, echo_ts, hold_us, rx_time_us, owd_min_us, highest)


def test_round_trip_is_the_echo_age_less_the_peers_hold():
    path = PathStats()
    assert path.srtt is None and path.one_way_delay() == 0.5
    # our datagram stamped at 1.000 s, held 5 ms by the peer, its report here at 1.045 s
    d = path.on_report(_report(echo_ts=1_000_000, hold_us=5_000), 1.045, 1_045_000, 0)
    assert path.srtt is not None and abs(path.srtt - 0.040) < 1e-9
    assert abs(path.rttvar - 0.020) < 1e-9
    assert d.sent_at is not None and abs(d.sent_at - 1.000) < 1e-9
    path.on_report(_report(echo_ts=1_100_000, hold_us=0), 1.120, 1_120_000, 0)  # a 20 ms sample
    assert abs(path.srtt - (0.875 * 0.040 + 0.125 * 0.020)) < 1e-9
    assert path.lowest_rtt() == 0.020 and path.one_way_delay() == 0.010


def test_an_echo_older_than_ten_seconds_says_nothing():
    path = PathStats()
    d = path.on_report(_report(echo_ts=0), 20.0, 20_000_000, 0)
    assert path.srtt is None and d.sent_at is None


def test_the_standing_queue_is_the_recent_one_way_delay_above_its_base():
    path = PathStats()
    assert path.queue_delay() is None
    path.on_report(_report(owd_min_us=30_000), 0.1, 100_000, 0)
    assert path.queue_delay() == 0.0
    path.on_report(_report(owd_min_us=42_000), 0.2, 200_000, 0)
    assert abs((path.queue_delay() or 0) - 0.012) < 1e-9


def test_loss_from_packet_numbers_and_a_restarted_peer_starts_a_new_base():
    path = PathStats()
    path.on_report(_report(rx_packets=0, highest=0), 0.0, 0, 0)
    path.on_report(_report(rx_packets=970, highest=1000), 0.1, 100_000, 0)  # 970 of 1000
    assert abs(path.loss - 0.03) < 1e-9
    path.restart_numbers()  # its counts start over: no sample from across the restart
    path.on_report(_report(rx_packets=5, highest=1100), 0.2, 200_000, 0)
    assert abs(path.loss - 0.03) < 1e-9


def test_what_a_startup_overshoot_lost_is_not_the_paths_loss():
    path = PathStats()
    path.on_report(_report(rx_packets=0, highest=0), 0.0, 0, 0, overshoot=1500)
    path.on_report(_report(rx_packets=700, highest=1000), 0.1, 100_000, 0, overshoot=1500)
    path.on_report(_report(rx_packets=1100, highest=1600), 0.2, 200_000, 0, overshoot=1500)
    assert path.loss == 0.0  # both samples held datagrams sent up to the overshoot's last
    path.on_report(_report(rx_packets=2070, highest=2600), 0.3, 300_000, 0, overshoot=1500)
    assert abs(path.loss - 0.03) < 1e-9  # 970 of the 1000 sent after it


def test_delivered_bytes_are_credited_only_up_to_what_was_sent():
    path = PathStats()
    assert path.on_report(_report(rx_bytes=1_000_000), 0.0, 0, 50_000).rx_bytes == 0
    assert path.on_report(_report(rx_bytes=1_030_000), 0.1, 0, 50_000).rx_bytes == 30_000
    # a report claiming 10 MB more when only 20 kB more was sent: 20 kB counted
    assert path.on_report(_report(rx_bytes=11_030_000), 0.2, 0, 50_000).rx_bytes == 50_000
    assert path.on_report(_report(rx_bytes=11_040_000), 0.3, 0, 60_000).rx_bytes == 60_000
