"""core/pacer.py Pacer with literal times."""

from braid.core.pacer import Pacer


def test_each_datagram_takes_its_time_at_the_rate_from_when_the_link_is_free():
    pacer = Pacer(0.0, 8e6)  # 1 MB/s
    pacer.take(1000, 1.0)  # idle link: from now
    assert abs(pacer.clock - 1.001) < 1e-12
    pacer.take(1000, 1.0)  # busy: after the one before
    assert abs(pacer.clock - 1.002) < 1e-12
    pacer.restart(5.0)
    assert pacer.clock == 5.0


def test_the_backlog_ends_when_what_is_queued_has_left():
    pacer = Pacer(0.0, 8e6)
    pacer.queued = 4000
    assert abs(pacer.backlog_end(2.0) - 2.004) < 1e-12  # idle: from now
    pacer.take(2000, 2.0)
    assert abs(pacer.backlog_end(2.0) - 2.006) < 1e-12  # after the datagram in progress
