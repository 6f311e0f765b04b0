"""The PNG beside each result: throughput per link and in total over time (events marked),
RTT under load below it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(results: list[dict[str, Any]], events: list[dict[str, Any]], out: Path,
         rtt_series: list[list[tuple[float, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2 * len(results), 1, figsize=(10, 5.5 * len(results)), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.3] * len(results)})
    for k, res in enumerate(results):
        ax, ax_rtt = axes[2 * k][0], axes[2 * k + 1][0]
        ts = [s["t"] for s in res["samples"]]
        ax.plot(ts, [s["goodput_mbit"] for s in res["samples"]], color="black", lw=1.8,
                label=f"braid goodput ({res['goodput_mbit']:.1f} Mbit/s)")
        links = list(res["samples"][0]["per_link_mbit"]) if res["samples"] else []
        for name in links:
            ax.plot(ts, [s["per_link_mbit"].get(name, 0) for s in res["samples"]], lw=1,
                    label=f"{name} (wire)")
        if res.get("baselines_mbit"):
            ax.axhline(res["baseline_sum_mbit"], ls="--", color="grey", lw=1,
                       label=f"sum of links alone ({res['baseline_sum_mbit']:.1f})")
        offset = res.get("clock_offset_s", 0.0)  # events are on the emulator's clock
        for ev in events:
            at = ev["at_s"] - offset
            for a in (ax, ax_rtt):
                a.axvline(at, color="red", ls=":", lw=1)
            ax.annotate(f"{ev['link']} {ev['set']}", (at, ax.get_ylim()[1] * 0.95), fontsize=7,
                        color="red", rotation=90, va="top")
        eff, cap_eff = res.get("efficiency"), res.get("capacity_efficiency")
        ax.set_title(f"{res['scenario']} — {res['direction']}"
                     + (f" — efficiency {eff:.2f}" if eff is not None else "")
                     + (f", of capacity {cap_eff:.2f}" if cap_eff is not None else ""))
        ax.set_ylabel("Mbit/s")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
        rtts = rtt_series[k]
        if rtts:
            ax_rtt.plot([t - offset for t, _ in rtts], [r for _, r in rtts], ".", ms=2, color="tab:purple")
        ax_rtt.set_xlim(ax.get_xlim())  # one time axis: the transfer's
        ax_rtt.set_ylabel("RTT ms (ping)")
        ax_rtt.set_xlabel("seconds")
        ax_rtt.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
