"""A link's health in each direction (core/health.py), driven with literal times and a
literal response timeout."""

from braid.core.health import READMIT_GOOD, Health, LinkHealth
from braid.core.timers import DOWN_AFTER

T = 0.15  # the link's response timeout
NO_GAP = -1.0  # the way back never lost a datagram


def _up(now: float = 0.0) -> LinkHealth:
    health = LinkHealth(now)
    for i in range(READMIT_GOOD):
        health.on_heard(now + i * 0.01)
    assert health.both_up
    return health


def test_a_new_link_is_suspect_until_heard_enough():
    health = LinkHealth(0.0)
    assert health.rx is Health.SUSPECT and health.state is Health.SUSPECT
    assert health.on_heard(0.01) is None
    assert health.on_heard(0.02) is None
    assert health.on_heard(0.03) is Health.UP and health.ever_up


def test_unanswered_data_with_nothing_heard_suspects_the_receive_direction():
    health = _up()
    health.on_heard(0.99)
    health.on_sent_expecting_answer(1.0, data=True)
    assert health.answer_deadline(T, NO_GAP) == float("inf")  # check_silence's case
    assert health.silence_deadline(T) == 1.0 + T
    assert health.check_silence(1.0 + T - 0.001, T) is None
    assert health.check_silence(1.0 + T, T) is Health.SUSPECT
    assert health.tx is Health.UP and health.state is Health.SUSPECT


def test_a_link_dead_both_ways_is_a_receive_suspect_even_if_a_datagram_was_on_its_way():
    health = _up()
    health.on_sent_expecting_answer(1.0, data=True)
    health.on_heard(1.01)  # it left the peer before the cut
    assert health.answer_deadline(T, NO_GAP) == float("inf")
    assert health.check_silence(1.0 + T, T) is Health.SUSPECT and health.tx is Health.UP


def test_a_link_whose_data_is_answered_is_never_suspected():
    health = _up()
    for k in range(1, 20):
        t = k * 0.1
        health.on_sent_expecting_answer(t, data=True)
        health.on_heard(t + 0.02)
        assert health.on_answered() is None
        assert health.check_silence(t + 0.05, T) is None
        assert health.check_answer(t + 0.5, T, NO_GAP) is None


def test_a_dead_send_direction_is_suspect_when_only_the_other_way_still_speaks():
    health = _up()
    health.on_sent_expecting_answer(1.0, data=True)
    for k in range(1, 40):  # the peer's datagrams keep coming: the receive direction is fine
        health.on_heard(1.0 + k * 0.01)
    assert health.answer_deadline(T, NO_GAP) == 1.0 + T
    assert health.check_silence(1.0 + T, T) is None
    assert health.check_answer(1.0 + T - 0.001, T, NO_GAP) is None
    assert health.check_answer(1.0 + T, T, NO_GAP) is Health.SUSPECT
    assert health.rx is Health.UP and not health.both_up
    assert health.answer_deadline(T, NO_GAP) == float("inf")  # nothing more to do: no busy timer
    # the peer's HEARD report still covers what it heard before the cut: it does not readmit
    assert health.on_peer_report(1.0 + T + 0.01, True, T) is None
    # and when it stops hearing the link, the send direction goes down after DOWN_AFTER
    assert health.on_peer_report(1.5, False, T) is None
    assert health.on_peer_report(1.0 + T + DOWN_AFTER, False, T) is Health.DOWN
    # a receiver report about the link (what was sent arrives again) readmits it
    assert health.on_answered() is Health.UP and health.both_up


def test_a_heard_report_past_its_window_readmits_a_send_direction_suspected_for_no_answer():
    health = _up()
    health.on_sent_expecting_answer(1.0, data=True)
    health.on_heard(1.1)
    assert health.check_answer(1.0 + T, T, NO_GAP) is Health.SUSPECT
    window = health.heard_window()
    assert health.on_peer_report(1.0 + T + window - 0.001, True, T) is None  # may predate it
    # past the window the peer heard the link after the unanswered data left: the link's
    # receiver reports may be held back (a new address the gateway has not validated yet)
    assert health.on_peer_report(1.0 + T + window, True, T) is Health.UP


def test_probes_a_lossy_way_back_and_a_ramping_rate_do_not_suspect_the_send_direction():
    health = _up()
    health.on_sent_expecting_answer(1.0, data=False)  # a probe: an idle peer answers it late
    for k in range(1, 40):
        health.on_heard(1.0 + k * 0.01)
    assert health.check_answer(2.0, T, NO_GAP) is None
    health.on_sent_expecting_answer(2.0, data=True)
    for k in range(1, 40):
        health.on_heard(2.0 + k * 0.01)
    # the way back lost a datagram after the data left: the answer may have been it
    assert health.check_answer(3.0, T, last_gap=2.05) is None
    assert health.check_answer(3.0, T, last_gap=1.95, ramping=True) is None  # a startup's queue
    assert health.check_answer(3.0, T, last_gap=1.95) is Health.SUSPECT


def test_heard_reports_make_the_send_direction_suspect_then_down_and_up_again():
    health = _up()
    assert health.on_peer_report(1.0, True, T) is None
    assert health.on_peer_report(1.1, False, T) is Health.SUSPECT
    assert health.on_peer_report(1.1 + DOWN_AFTER - 0.01, False, T) is None
    assert health.on_peer_report(1.1 + DOWN_AFTER, False, T) is Health.DOWN
    assert health.on_peer_report(4.0, True, T) is Health.UP


def test_suspect_goes_down_after_long_silence_and_returns_after_enough_heard():
    health = _up()
    health.on_sent_expecting_answer(1.0, data=True)
    assert health.check_silence(1.5, T) is Health.SUSPECT
    assert health.silence_deadline(T) == 1.5 + DOWN_AFTER
    assert health.check_silence(1.5 + DOWN_AFTER, T) is Health.DOWN
    assert health.silence_deadline(T) == float("inf")
    assert health.on_heard(5.0) is None
    assert health.on_heard(5.03) is None
    assert health.on_heard(5.06) is Health.UP


def test_a_peer_restart_forgets_what_the_old_peer_owed():
    health = _up()
    health.on_sent_expecting_answer(1.0, data=True)
    health.on_heard(1.1)
    assert health.check_answer(1.2, T, NO_GAP) is Health.SUSPECT
    health.on_peer_restart()
    assert health.tx is Health.UP and health.answer_deadline(T, NO_GAP) == float("inf")
