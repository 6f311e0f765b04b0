"""One scenario run: build the lab, measure the emulator, the links alone and braid, write the
result JSON (one object per direction; `both` runs up, then down) and the plot."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import result as resultlib
from .plot import plot
from .scenario import Scenario, capacity_at, capacity_mbit
from .topology import TUNNEL_GW, Lab, cpu_seconds, link_addr
from .workload import Pinger, TcpWatch, TransferResult, iperf, ping_rtts, quic_transfer

Progress = Callable[[str], None]
UDP_PAYLOAD, UDP_IP = 1400, 1428
FIDELITY_S = 3.0


class EmulatorOutput:
    """Reads the emulator's JSON lines (samples, events, stats) in the background."""

    def __init__(self, stream: Any) -> None:
        self.samples: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.stats: dict[str, Any] | None = None
        self._stats_ready = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "stats" in obj:
                self.stats = obj["stats"]
                self._stats_ready.set()
            elif "event" in obj:
                self.events.append(obj)
            else:
                self.samples.append(obj)

    def mark(self) -> None:
        self.samples = []
        self.events = []

    def fetch_stats(self, lab: Lab) -> dict[str, Any]:
        self._stats_ready.clear()
        lab.emu("stats")
        self._stats_ready.wait(5)
        return self.stats or {}


def _fidelity(lab: Lab, direction: str, progress: Progress) -> dict[str, dict[str, Any]]:
    out = {}
    for i, link in enumerate(lab.scenario.links):
        progress(f"emulator fidelity: {link.name} {direction}")
        rate = link.rate(direction)
        # steady state: the first second (sender start-up, queue filling) is not counted
        blast = iperf(lab.ns, link_addr(i, "gw"), FIDELITY_S, direction, udp_mbit=rate * 1.2, port=5210,
                      omit=1.0)
        wire_rate = blast.goodput_mbit * UDP_IP / UDP_PAYLOAD
        time.sleep(0.3)  # let the blast's queue drain before timing the idle path
        rtts = ping_rtts(lab.ns, link_addr(i, "gw"), count=30, interval_ms=20)
        # idle ping: two one-way delays plus two uniform jitters in [0, jitter] (mean: jitter)
        expected = 2 * link.delay_ms + link.jitter_ms
        out[link.name] = {
            "rate_ratio": round(wire_rate / (rate * (1 - link.loss)), 3),
            "rtt_error_ms": round(sum(rtts) / len(rtts) - expected, 3) if rtts else None,
            "rtt_expected_ms": expected,
        }
    return out


def _baselines(lab: Lab, direction: str, seconds: float, progress: Progress) -> dict[str, float]:
    out = {}
    w = lab.scenario.workload
    for i, link in enumerate(lab.scenario.links):
        if w.kind == "quic":  # the links alone, measured with the same transfer
            progress(f"baseline: one QUIC transfer over {link.name} alone, {direction}, {seconds:g} s")
            result = quic_transfer(lab.ns, link_addr(i, "gw"), seconds, direction, port=4434)
        else:
            progress(f"baseline: one TCP flow over {link.name} alone, {direction}, {seconds:g} s")
            result = iperf(lab.ns, link_addr(i, "gw"), seconds, direction, cc=w.cc, port=5211)
        out[link.name] = result.goodput_mbit
    return out


def _link_bytes(status: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {link["name"]: {"tx_bytes": link["tx_bytes"], "rx_bytes": link["rx_bytes"]}
            for link in status["peers"][0]["links"]}


def _tunnel_run(lab: Lab, direction: str, emu_out: EmulatorOutput, progress: Progress
                ) -> tuple[TransferResult, list[tuple[float, float]], dict[str, float], dict, int]:
    """The transfer, the pings' (send time, RTT), CPU seconds per process, bytes per link,
    and how many pings got no reply."""
    sc, w = lab.scenario, lab.scenario.workload
    progress(f"braid: {w.kind} {direction} for {sc.duration_s:g} s")
    pids = lab.pids()
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    before = _link_bytes(lab.status())
    emu_out.mark()
    lab.emu("start")
    pinger = Pinger(lab.ns, TUNNEL_GW, w.interval_ms, sc.duration_s)
    if w.kind == "ping":
        time.sleep(sc.duration_s)
        transfer = TransferResult(0.0, 0)
    elif w.kind == "udp":
        transfer = iperf(lab.ns, TUNNEL_GW, sc.duration_s, direction, udp_mbit=w.rate_mbit)
    elif w.kind == "quic":
        transfer = quic_transfer(lab.ns, TUNNEL_GW, sc.duration_s, direction)
    else:
        # the sender: the site for an upload, the gateway's side for a download (-R)
        watch = TcpWatch(lab.ns, "site" if direction == "up" else "gw")
        transfer = iperf(lab.ns, TUNNEL_GW, sc.duration_s, direction, cc=w.cc, flows=w.flows)
        transfer.inner_tcp = watch.result()
    rtts = pinger.result()
    lab.emu("reset")
    after = _link_bytes(lab.status())
    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
    per_link = {n: {k: after[n][k] - before[n][k] for k in after[n]} for n in after}
    return transfer, rtts, cpu, per_link, pinger.sent - len(rtts)


def _link_events(workdir: Path) -> dict[str, list[str]]:
    """Link state changes each daemon logged (for reading a run, not for scoring it)."""
    out = {}
    for role in ("client", "gateway"):
        log = workdir / f"{role}.log"
        lines = log.read_text().splitlines() if log.exists() else []
        out[role] = [line.split(" INFO ", 1)[-1] for line in lines
                     if re.search(r"link \S+ (rx|tx|role) ", line)][-40:]
    return out


def run_scenario(sc: Scenario, out_json: Path | None = None, out_png: Path | None = None,
                 tunnel_only: bool = False, progress: Progress = lambda s: None,
                 keep_dir: bool = False, shaper: str = "emulator") -> list[dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="braid-lab-"))
    lab = Lab(sc, workdir, shaper=shaper)
    results: list[dict[str, Any]] = []
    rtt_series = []
    try:
        progress(f"building namespaces {lab.ns.prefix}-*")
        lab.build()
        assert lab.emulator is not None and lab.emulator.stdout is not None
        emu_out = EmulatorOutput(lab.emulator.stdout)
        baseline_s = min(10.0, max(4.0, sc.duration_s / 2))
        for direction in sc.workload.directions():
            fidelity = baselines = None
            if not tunnel_only:
                fidelity = _fidelity(lab, direction, progress)
                if sc.workload.kind != "ping":
                    baselines = _baselines(lab, direction, baseline_s, progress)
            # braid starts fresh for each measured run, after the baselines: their queues and
            # idle time are not part of what is measured
            progress("starting braid gateway and client")
            lab.start_braid()
            progress("braid: idle RTT through the tunnel")
            rtt_idle = ping_rtts(lab.ns, TUNNEL_GW, count=20, interval_ms=20)
            transfer, rtts, cpu, per_link, pings_lost = _tunnel_run(lab, direction, emu_out, progress)
            stats = emu_out.fetch_stats(lab)
            late = max((v.get("late_max_ms", 0) for v in stats.values()), default=0)
            flags = []
            if fidelity:
                flags += [f"{n}: rate ratio {f['rate_ratio']}" for n, f in fidelity.items()
                          if abs(f["rate_ratio"] - 1) > 0.05]
                flags += [f"{n}: rtt error {f['rtt_error_ms']} ms" for n, f in fidelity.items()
                          if f["rtt_error_ms"] is not None and abs(f["rtt_error_ms"]) > 1.0]
            capacity = capacity_mbit(sc, direction)
            extra = {"workload": sc.workload.kind, "duration_s": sc.duration_s, "shaper": shaper,
                     "emulator_ok": not flags, "emulator_flags": flags,
                     "emulator_late_max_ms": late, "pings_lost": pings_lost,
                     "events": [e["event"] | {"applied_at_s": e["t"]} for e in emu_out.events]}
            if transfer.udp_loss is not None:
                extra["udp"] = {"loss": transfer.udp_loss, "jitter_ms": transfer.udp_jitter_ms}
            if transfer.inner_tcp is not None:
                extra["inner_tcp"] = transfer.inner_tcp
            if transfer.receiver_drops is not None:
                extra["quic"] = {"receiver_socket_drops": transfer.receiver_drops}
            results.append(resultlib.build(
                scenario=sc.name, direction=direction, transfer=transfer, baselines=baselines,
                capacity=capacity, rtt_idle=rtt_idle, rtt_load=[r for _, r in rtts],
                per_link=per_link, link_samples=list(emu_out.samples), cpu=cpu,
                fidelity=fidelity or {}, extra=extra))
            # when a link went down: how soon the others carried 0.9 of what they can
            results[-1]["outages"] = resultlib.outages(
                [{"at_s": e.at_s, "link": e.link, "set": e.changes} for e in sc.events],
                lambda t, d=direction: capacity_at(sc, d, t), sc.duration_s, transfer.samples,
                results[-1]["clock_offset_s"])
            results[-1]["braid_counters"] = {
                role: lab.status(role)["peers"][0]["counters"] for role in ("client", "gateway")}
            results[-1]["braid_link_events"] = _link_events(workdir)
            rtt_series.append(rtts)
    finally:
        lab.close()
        if not keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(results[0] if len(results) == 1 else results, indent=1))
    if out_png is not None:
        out_png.parent.mkdir(parents=True, exist_ok=True)
        plot(results, [{"at_s": e.at_s, "link": e.link, "set": e.changes} for e in sc.events],
             out_png, rtt_series)
    return results
