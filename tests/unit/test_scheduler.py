from braid.core.health import READMIT_GOOD
from braid.core.link import Link, LinkConfig
from braid.core.scheduler import EarliestArrival, assign, make_scheduler


def _link(name: str, link_id: int, rate: float, delay: float) -> Link:
    link = Link(LinkConfig(name, link_id), 0.0)
    for i in range(READMIT_GOOD):
        link.health.on_heard(i * 0.001)
    link.pacer.rate = rate
    link.path_delay = delay
    return link


def test_idle_links_prefer_the_lowest_delay():
    fast, slow = _link("fast", 0, 20e6, 0.005), _link("slow", 1, 20e6, 0.030)
    assert EarliestArrival().pick([slow, fast], 1500, 1.0) is fast


def test_slow_link_used_once_the_fast_queue_is_deeper_than_the_delay_gap():
    fast, slow = _link("fast", 0, 10e6, 0.005), _link("slow", 1, 10e6, 0.025)
    sched = EarliestArrival()
    choices = []
    for _ in range(100):
        link = sched.pick([fast, slow], 1500, 1.0)
        assign(link, 1500)
        choices.append(link.name)
    # 20 ms of delay gap at 10 Mbit/s is ~17 packets queued on the fast link first
    first_slow = choices.index("slow")
    assert 15 <= first_slow <= 19
    assert 0.4 < choices.count("slow") / 100 < 0.5


def test_split_follows_rates_under_load():
    a, b = _link("a", 0, 30e6, 0.01), _link("b", 1, 10e6, 0.01)
    sched = EarliestArrival()
    counts = {"a": 0, "b": 0}
    for _ in range(4000):
        link = sched.pick([a, b], 1500, 0.0)
        assign(link, 1500)
        counts[link.name] += 1
    assert abs(counts["a"] / 4000 - 0.75) < 0.02


def test_suspect_links_are_skipped():
    a, b = _link("a", 0, 10e6, 0.001), _link("b", 1, 10e6, 0.05)
    a.health.on_sent_expecting_answer(1.0, data=True)
    a.health.check_silence(5.0, a.response_timeout())
    assert not a.usable
    assert EarliestArrival().pick([a, b], 1500, 5.0) is b


def test_unknown_scheduler_name_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("nope")


def test_urgent_packets_ignore_the_tunnel_queue_they_skip():
    from braid.core.scheduler import pick_urgent

    fast, slow = _link("fast", 0, 10e6, 0.010), _link("slow", 1, 10e6, 0.030)
    for _ in range(100):  # 120 ms of bulk queued in the tunnel for the fast link
        assign(fast, 1500)
    assert EarliestArrival().pick([fast, slow], 100, 1.0) is slow
    assert pick_urgent([fast, slow], 100, 1.0, handed_ahead=0.002) is fast
