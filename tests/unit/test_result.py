from braid.lab.result import bench_summary, clock_offset_s, max_stall_ms, outages, percentile, recovery_s


def test_percentile():
    assert percentile([], 0.5) is None
    assert percentile([1, 2, 3, 4], 0.5) == 2.5
    assert percentile(list(range(101)), 0.99) == 99


def test_max_stall_counts_the_longest_near_zero_run_after_traffic_started():
    samples = [(i / 10, v) for i, v in enumerate([0, 0, 10, 10, 0, 0, 0, 10, 0.1, 10, 10])]
    assert max_stall_ms(samples) == 300.0
    assert max_stall_ms([(0.1, 5.0)] * 10) == 0.0


def test_recovery():
    samples = [(0.1 * i, v) for i, v in enumerate([30, 30, 0, 5, 12, 14, 15])]
    assert recovery_s(samples, 0.15, 13.5) == 0.35
    assert recovery_s(samples, 0.15, 99) is None


def test_the_emulator_clock_is_aligned_on_the_first_traffic_both_sides_see():
    goodput = [(0.1 * i, v) for i, v in enumerate([0, 12, 25, 30, 30], start=1)]
    wire = [{"t": 0.1 * i, "mbit": {"a/down": v / 2, "b/down": v / 2, "a/up": 0.4}}
            for i, v in enumerate([0, 0, 0, 0, 0, 12, 25, 30], start=1)]
    assert clock_offset_s(goodput, wire, "down") == 0.4
    assert clock_offset_s(goodput, wire, "up") == 0.0  # no traffic that way: left unaligned
    assert clock_offset_s([], wire, "down") == 0.0


def test_an_outage_reports_how_soon_the_other_links_carried_what_they_can():
    events = [{"at_s": 2.0, "link": "a", "set": {"up": False}},
              {"at_s": 3.0, "link": "a", "set": {"up": True}}]

    def capacity_at(t):
        return {"a": 0.0 if 2.0 <= t < 3.0 else 20.0, "b": 10.0}

    # transfer clock 0.5 s behind the emulator's: the outage is 1.5-2.5 s on it
    values = {1.6: 0.0, 1.7: 2.0, 1.8: 8.0, 1.9: 9.5, 2.0: 10.0}
    goodput = [(round(0.1 * i, 1), values.get(round(0.1 * i, 1), 30.0 if i <= 15 or i > 25 else 10.0))
               for i in range(1, 40)]
    (out,) = outages(events, capacity_at, 5.0, goodput, 0.5)
    assert out["link"] == "a" and out["at_s"] == 1.5 and out["lasted_s"] == 1.0
    assert out["remaining_capacity_mbit"] == 10.0
    assert out["recovery_s"] == 0.4  # the first sample at >= 9 Mbit/s ends at 1.9
    assert 0.75 < out["mean_of_remaining"] < 0.9
    never = [(t, 1.0 if 1.5 < t <= 2.5 else v) for t, v in goodput]
    assert outages(events, capacity_at, 5.0, never, 0.5)[0]["recovery_s"] is None


def test_a_bench_summary_is_over_its_bulk_runs():
    def run(name, kind, eff, stall, recoveries=()):
        return {"scenario": name, "direction": "up", "workload": kind, "capacity_efficiency": eff,
                "max_stall_ms": stall, "outages": [{"recovery_s": r} for r in recoveries]}

    results = [run("a", "tcp", 0.9, 100), run("b", "quic", 0.8, 300, [0.4, None]),
               run("c", "tcp", 0.95, 0), run("voice", "udp", 0.07, 900)]
    summary = bench_summary(results)
    assert summary["bulk_runs"] == 3
    assert summary["median_capacity_efficiency"] == 0.9
    assert summary["worst_capacity_efficiency"] == 0.8 and summary["worst"] == "b (up)"
    assert summary["max_stall_ms"] == 300 and summary["outage_recovery_s"] == [0.4, None]
    assert bench_summary([run("voice", "udp", 0.07, 900)]) == {"bulk_runs": 0}
