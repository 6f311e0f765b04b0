from braid.lab.result import max_stall_ms, percentile, recovery_s


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
