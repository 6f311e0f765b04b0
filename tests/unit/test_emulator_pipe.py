"""The emulator's link model, in virtual time with a seeded RNG."""

import random

from braid.lab.emulator import ETH_HEADER, Pipe, PipeConfig, apply_changes


def _frame(size: int = 1500) -> bytes:
    return bytes(size + ETH_HEADER)


def test_rate_and_delay():
    pipe = Pipe(PipeConfig(rate_bps=12e6, delay=0.010, queue=1.0))
    rng = random.Random(1)
    for _ in range(100):
        assert pipe.offer(_frame(), 0.0, rng)
    # packet k (1..100) finishes serializing at k ms (1500 bytes at 12 Mbit/s), arrives 10 ms later;
    # due() hands packets out up to 0.5 ms early
    assert len(pipe.due(0.1089)) == 99
    assert len(pipe.due(0.1096)) == 1
    assert pipe.forwarded_bytes == 150_000


def test_queue_is_tail_dropped_at_its_size_in_time():
    pipe = Pipe(PipeConfig(rate_bps=12e6, delay=0.0, queue=0.010))  # 10 ms = 10 packets of 1 ms
    rng = random.Random(1)
    accepted = sum(pipe.offer(_frame(), 0.0, rng) for _ in range(30))
    assert accepted == 11
    assert pipe.dropped_queue == 19


def test_jitter_never_reorders():
    pipe = Pipe(PipeConfig(rate_bps=100e6, delay=0.02, jitter=0.015, queue=1.0))
    rng = random.Random(7)
    for i in range(500):
        pipe.offer(i.to_bytes(4, "big") + bytes(200), i * 0.0005, rng)
    out = pipe.due(10.0)
    seqs = [int.from_bytes(f[:4], "big") for f in out]
    assert seqs == sorted(seqs) and len(seqs) == 500


def test_loss_statistics():
    pipe = Pipe(PipeConfig(rate_bps=1e9, loss=0.03, queue=10.0))
    rng = random.Random(3)
    n = 20_000
    got = sum(pipe.offer(_frame(100), i * 1e-5, rng) for i in range(n))
    assert abs((n - got) / n - 0.03) < 0.005
    assert pipe.dropped_loss == n - got


def test_outage_drops_and_clears_the_wire_then_recovers():
    pipes = {"up": Pipe(PipeConfig(rate_bps=1e6)), "down": Pipe(PipeConfig(rate_bps=1e6))}
    rng = random.Random(1)
    pipes["up"].offer(_frame(), 0.0, rng)
    apply_changes(pipes, {"up": False})
    assert pipes["up"].due(5.0) == []
    assert not pipes["up"].offer(_frame(), 5.0, rng)
    apply_changes(pipes, {"up": True, "rate_mbit": 2, "delay_ms": 30})
    assert pipes["down"].config.rate_bps == 2e6 and pipes["up"].config.delay == 0.03
    assert pipes["up"].offer(_frame(), 6.0, rng)


def test_rate_trace_sets_the_rate_per_millisecond():
    # 1500 bytes allowed in each odd ms, 3000 in each even ms: 2250 bytes/ms on average = 18 Mbit/s
    pipe = Pipe(PipeConfig(rate_bps=1.0, queue=10.0, trace=[3000, 1500]))
    rng = random.Random(1)
    for _ in range(1000):
        pipe.offer(_frame(), 0.0, rng)
    done = pipe.busy_until
    assert abs(1000 * 1500 * 8 / done / 1e6 - 18) < 1.0
