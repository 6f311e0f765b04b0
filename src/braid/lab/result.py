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


def first_traffic_s(samples: list[tuple[float, float]], floor_mbit: float) -> float | None:
    """End time of the first sample carrying at least floor_mbit."""
    return next((t for t, v in samples if v >= floor_mbit), None)


def clock_offset_s(goodput: list[tuple[float, float]], link_samples: list[dict[str, Any]],
                   direction: str, floor_mbit: float = 1.0) -> float:
    """Seconds the emulator's clock (its events and per-link samples) runs ahead of the
    transfer's: the emulator starts when the run does, the transfer a few round trips of
    set-up later (0.3-0.5 s here, more over a slow path). Both count bytes as they reach the
    receiving side, so the first 100 ms of each that carries traffic mark one moment."""
    wire = [(s["t"], sum(v for k, v in s["mbit"].items() if k.endswith(f"/{direction}")))
            for s in link_samples]
    t_emu, t_transfer = first_traffic_s(wire, floor_mbit), first_traffic_s(goodput, floor_mbit)
    if t_emu is None or t_transfer is None:
        return 0.0
    return round(max(0.0, t_emu - t_transfer), 1)


def outages(events: list[dict[str, Any]], capacity_at: Any, duration_s: float,
            goodput: list[tuple[float, float]], offset_s: float) -> list[dict[str, Any]]:
    """Each time a link goes down: when (on the transfer's clock), what the other links can
    carry then (`capacity_at(t)`: capacity in Mbit/s per link at emulator time t), how long
    goodput took to reach 0.9 of that (None: not before the link came back), and the mean
    goodput over the outage against that capacity."""
    out = []
    downs = [e for e in events if e["set"].get("up") is False]
    for ev in downs:
        start = ev["at_s"]
        ups = [e["at_s"] for e in events if e["link"] == ev["link"] and e["at_s"] > start
               and e["set"].get("up") is True]
        end = min(ups, default=duration_s)
        remaining = sum(v for name, v in capacity_at(start + 1e-6).items() if name != ev["link"])
        t0, t1 = start - offset_s, end - offset_s
        within = [(t, v) for t, v in goodput if t0 < t <= t1]
        rec = recovery_s(within, t0, 0.9 * remaining)
        mean = sum(v for _, v in within) / len(within) if within else None
        share = round(mean / remaining, 3) if mean is not None and remaining else None
        out.append({"link": ev["link"], "at_s": round(t0, 2), "lasted_s": round(end - start, 2),
                    "remaining_capacity_mbit": round(remaining, 3), "recovery_s": rec,
                    "mean_mbit": _r(mean), "mean_of_remaining": share})
    return out


def build(*, scenario: str, direction: str, transfer: Any, baselines: dict[str, float] | None,
          capacity: dict[str, float], rtt_idle: list[float],
          rtt_load: list[float], per_link: dict[str, dict[str, int]],
          link_samples: list[dict[str, Any]], cpu: dict[str, float],
          fidelity: dict[str, dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    goodput = transfer.goodput_mbit
    base_sum = sum(baselines.values()) if baselines else None
    cap_sum = sum(capacity.values())  # rate x (1 - loss) per link, over the run's events
    samples = []
    offset = clock_offset_s(transfer.samples, link_samples, direction)
    by_t = {round(s["t"], 1): s["mbit"] for s in link_samples}
    for t, v in transfer.samples:
        per = by_t.get(round(t + offset, 1), {})
        samples.append({"t": t, "goodput_mbit": round(v, 3),
                        "per_link_mbit": {n: per.get(f"{n}/{direction}", 0.0) for n in capacity}})
    result: dict[str, Any] = {
        "scenario": scenario, "tunnel": "braid", "direction": direction,
        "goodput_mbit": round(goodput, 3),
        "baseline_sum_mbit": round(base_sum, 3) if base_sum is not None else None,
        "best_link_mbit": round(max(baselines.values()), 3) if baselines else None,
        "efficiency": round(goodput / base_sum, 4) if base_sum else None,
        "capacity_sum_mbit": round(cap_sum, 3),
        "capacity_mbit": {n: round(v, 3) for n, v in capacity.items()},
        "capacity_efficiency": round(goodput / cap_sum, 4) if cap_sum else None,
        "retransmits": transfer.retransmits,
        "max_stall_ms": max_stall_ms(transfer.samples),
        "rtt_ms": {"idle_p50": _r(percentile(rtt_idle, 0.5)), "load_p50": _r(percentile(rtt_load, 0.5)),
                   "load_p99": _r(percentile(rtt_load, 0.99))},
        "per_link": per_link,
        "samples": samples,
        "clock_offset_s": offset,  # the emulator's event times run this far ahead of "samples"
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "emulator_fidelity": fidelity,
        "baselines_mbit": {k: round(v, 3) for k, v in baselines.items()} if baselines else None,
    }
    result.update(extra)
    return result


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def bench_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """What a bench's table adds up to, over its bulk runs (TCP, QUIC, TCP beside pings; a
    fixed-rate UDP flow is not trying to fill the links): the median and the worst capacity
    efficiency, the longest stall, and the slowest return to 0.9 of the other links'
    capacity after an outage (None in `outage_recovery_s`: one was not reached before the
    link came back)."""
    bulk = [r for r in results if r.get("workload") in ("tcp", "quic", "mixed")
            and r.get("capacity_efficiency") is not None]
    if not bulk:
        return {"bulk_runs": 0}
    worst = min(bulk, key=lambda r: r["capacity_efficiency"])
    stall = max(bulk, key=lambda r: r["max_stall_ms"])
    recoveries = [o["recovery_s"] for r in bulk for o in r.get("outages") or []]
    return {"bulk_runs": len(bulk),
            "median_capacity_efficiency": round(statistics.median(r["capacity_efficiency"] for r in bulk), 3),
            "worst_capacity_efficiency": worst["capacity_efficiency"],
            "worst": f"{worst['scenario']} ({worst['direction']})",
            "max_stall_ms": stall["max_stall_ms"], "max_stall": f"{stall['scenario']} ({stall['direction']})",
            "outage_recovery_s": recoveries}
