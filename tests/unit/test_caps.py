"""Monthly caps on metered links: periods from a reset day, counts across restarts."""

from datetime import date

from braid.core.caps import MB, Caps, next_period, period_start


def test_cap_periods_start_on_the_reset_day():
    assert period_start(date(2026, 12, 1), 1) == date(2026, 12, 1)
    assert period_start(date(2026, 12, 14), 15) == date(2026, 11, 15)
    assert period_start(date(2026, 1, 3), 5) == date(2025, 12, 5)
    assert next_period(date(2026, 12, 15)) == date(2027, 1, 15)


def test_a_link_over_its_cap_until_the_next_period_and_counts_survive_a_restart():
    caps = Caps({"lte": (100, 15)}, {}, date(2026, 12, 1))
    assert caps.account("fibre", 10**9, date(2026, 12, 1)) == []  # not capped
    assert caps.account("lte", 60 * MB, date(2026, 12, 1)) == [] and not caps.over("lte")
    saved = caps.state()
    again = Caps({"lte": (100, 15)}, saved, date(2026, 12, 2))  # a restart, same period
    events = again.account("lte", 50 * MB, date(2026, 12, 2))
    assert again.over("lte") and "cap of 100 MB reached" in events[0] and "2026-12-15" in events[0]
    events = again.account("lte", 1, date(2026, 12, 15))  # the new period
    assert not again.over("lte") and "in use again" in events[0]
    later = Caps({"lte": (100, 15)}, saved, date(2026, 12, 20))  # an old period's count: dropped
    assert later.caps["lte"].used == 0
    assert Caps({}, saved, date(2026, 12, 2)).caps == {}  # no longer capped
