"""Turning measurements into the LAB.md result object (pure functions)."""

from __future__ import annotations

import statistics
from typing import Any

SAMPLE_S = 0.1


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def max_stall_ms(samples: list[tuple[float, float]], floor_mbit: float | None = None) -> float:
    """Longest run of 100 ms samples with ~zero goodput (below 5 % of the run's median, at least
    0.05 Mbit/s), counted from the first sample that carried traffic."""
    values = [v for _, v in samples]
    if not values:
        return 0.0
    if floor_mbit is None:
        floor_mbit = max(0.05, 0.05 * statistics.median(values))
    started = False
    run = longest = 0
    for v in values:
        if v >= floor_mbit:
            started = True
            run = 0
        elif started:
            run += 1
            longest = max(longest, run)
    return round(longest * SAMPLE_S * 1000, 1)


def recovery_s(samples: list[tuple[float, float]], at_s: float, target_mbit: float) -> float | None:
    """Seconds after `at_s` until a sample reaches target_mbit (None if never)."""
    for t, v in samples:
        if t > at_s and v >= target_mbit:
            return round(t - at_s, 2)
    return None


def build(*, scenario: str, direction: str, transfer: Any, baselines: dict[str, float] | None,
          capacity: dict[str, float], loss: dict[str, float], rtt_idle: list[float],
          rtt_load: list[float], per_link: dict[str, dict[str, int]],
          link_samples: list[dict[str, Any]], cpu: dict[str, float],
          fidelity: dict[str, dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    goodput = transfer.goodput_mbit
    base_sum = sum(baselines.values()) if baselines else None
    cap_sum = sum(capacity[n] * (1 - loss[n]) for n in capacity)
    samples = []
    by_t = {round(s["t"], 1): s["mbit"] for s in link_samples}
    for t, v in transfer.samples:
        per = by_t.get(round(t, 1), {})
        samples.append({"t": t, "goodput_mbit": round(v, 3),
                        "per_link_mbit": {n: per.get(f"{n}/{direction}", 0.0) for n in capacity}})
    result: dict[str, Any] = {
        "scenario": scenario, "tunnel": "braid", "direction": direction,
        "goodput_mbit": round(goodput, 3),
        "baseline_sum_mbit": round(base_sum, 3) if base_sum is not None else None,
        "best_link_mbit": round(max(baselines.values()), 3) if baselines else None,
        "efficiency": round(goodput / base_sum, 4) if base_sum else None,
        "capacity_sum_mbit": round(cap_sum, 3),
        "capacity_efficiency": round(goodput / cap_sum, 4) if cap_sum else None,
        "retransmits": transfer.retransmits,
        "max_stall_ms": max_stall_ms(transfer.samples),
        "rtt_ms": {"idle_p50": _r(percentile(rtt_idle, 0.5)), "load_p50": _r(percentile(rtt_load, 0.5)),
                   "load_p99": _r(percentile(rtt_load, 0.99))},
        "per_link": per_link,
        "samples": samples,
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "emulator_fidelity": fidelity,
        "baselines_mbit": {k: round(v, 3) for k, v in baselines.items()} if baselines else None,
    }
    result.update(extra)
    return result


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
