"""`braid lab perf`: what braid itself costs, with nothing shaping the path. One veth pair
joins the site and the gateway namespaces directly (no emulator, no qdisc), so the link is
far faster than braid: one TCP flow through the tunnel then measures braid's throughput
and its CPU seconds per GB moved, each direction, beside the same flow on the bare link."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from .scenario import parse
from .topology import TUNNEL_GW, Lab, cpu_seconds, link_addr
from .workload import iperf

SCENARIO = """name = "unshaped"
duration_s = 10
[[link]]
name = "direct"
up_mbit = 10000
down_mbit = 10000
delay_ms = 0
"""


def run_perf(seconds: float = 10.0, progress: Any = lambda s: None) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="braid-perf-"))
    lab = Lab(parse(SCENARIO, Path("unshaped.toml")), workdir)
    out: dict[str, Any] = {"seconds": seconds}
    try:
        progress(f"building namespaces {lab.ns.prefix}-* (one veth pair, unshaped)")
        lab.build(direct=True)
        for direction in ("up", "down"):
            progress(f"bare link: one TCP flow {direction}, {seconds:g} s")
            bare = iperf(lab.ns, link_addr(0, "gw"), seconds, direction, port=5211)
            out.setdefault("bare_mbit", {})[direction] = round(bare.goodput_mbit, 1)
        progress("starting braid gateway and client")
        lab.start_braid()
        pids = lab.pids()
        for direction in ("up", "down"):
            progress(f"braid: one TCP flow {direction}, {seconds:g} s")
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
            result = iperf(lab.ns, TUNNEL_GW, seconds, direction)
            cpu = {k: round(cpu_seconds(p) - cpu0[k], 2) for k, p in pids.items()}
            gb = result.goodput_mbit * seconds / 8 / 1000
            out[direction] = {
                "mbit": round(result.goodput_mbit, 1), "retransmits": result.retransmits,
                "cpu_s": cpu,
                "cpu_s_per_gb": {k: round(v / gb, 2) if gb else None for k, v in cpu.items()},
            }
    finally:
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return out
