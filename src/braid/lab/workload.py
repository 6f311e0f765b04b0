"""Traffic: iperf3 (TCP, UDP), one QUIC transfer (lab/quicperf.py) and ping, run in the lab
namespaces, parsed into numbers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .netns import LabError, Namespaces

PING_LINE = re.compile(r"^\[(\d+\.\d+)\].*icmp_seq=(\d+).*time=([\d.]+) ms")


@dataclass
class TransferResult:
    goodput_mbit: float
    retransmits: int
    samples: list[tuple[float, float]] = field(default_factory=list)  # (t end, Mbit/s) receiver side
    udp_loss: float | None = None
    udp_jitter_ms: float | None = None
    udp_out_of_order: int | None = None
    receiver_drops: int | None = None  # a QUIC receiver's socket overflows (not the path's)
    inner_tcp: dict[str, float] | None = None  # what held the TCP sender back (TcpWatch)


def _iperf_json(text: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabError(f"iperf3 printed no JSON: {text[-300:]}") from exc
    if "error" in data:
        raise LabError(f"iperf3: {data['error']}")
    return data


def _samples(intervals: list[dict]) -> list[tuple[float, float]]:
    return [(round(i["sum"]["end"], 3), i["sum"]["bits_per_second"] / 1e6) for i in intervals]


def iperf(ns: Namespaces, server_ip: str, seconds: float, direction: str, **kwargs: Any
          ) -> TransferResult:
    """One iperf3 run (see _iperf_once); a run iperf3 itself reports as failed (its control
    connection timing out over a lossy link, say) is tried once more, then the error stands."""
    try:
        return _iperf_once(ns, server_ip, seconds, direction, **kwargs)
    except LabError:
        time.sleep(1.0)
        return _iperf_once(ns, server_ip, seconds, direction, **kwargs)


def _iperf_once(ns: Namespaces, server_ip: str, seconds: float, direction: str, *, cc: str = "cubic",
          flows: int = 1, udp_mbit: float | None = None, port: int = 5201,
          interval: float = 0.1, omit: float = 0.0) -> TransferResult:
    """One iperf3 run from the site (client) to a server in the gateway namespace.
    `direction` up: site sends; down: gateway sends (-R). Samples are receiver side."""
    # the server reports in JSON at the same interval, so that an upload's samples are the
    # receiver's (with a text server, --get-server-output carries no intervals and the
    # sender's bursty socket writes would stand in for them)
    server = ns.popen("gw", ["iperf3", "-s", "-1", "-B", server_ip, "-p", str(port), "-J",
                             "-i", f"{interval:g}"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        args = ["iperf3", "-c", server_ip, "-p", str(port), "-t", f"{seconds:g}", "-J",
                "-i", f"{interval:g}", "-P", str(flows)]
        if omit:
            args += ["-O", f"{omit:g}"]
        if udp_mbit is not None:
            args += ["-u", "-b", f"{udp_mbit}M", "-l", "1400"]
        else:
            args += ["-C", cc]
        if direction == "down":
            args.append("-R")
        else:
            args.append("--get-server-output")
        proc = ns.run("site", args, check=False, timeout=seconds + 60)
        data = _iperf_json(proc.stdout)
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    end = data["end"]
    if "sum_received" not in end and "sum" not in end:
        raise LabError("iperf3 gave no summary (its results exchange failed)")
    if udp_mbit is not None:
        s = end.get("sum_received", end.get("sum"))  # the receiver's own count over its own time
        lost = s.get("lost_percent", 0.0) / 100
        goodput = s["bits_per_second"] / 1e6
        intervals = data["intervals"]
        if direction == "up" and "server_output_json" in data:
            intervals = data["server_output_json"]["intervals"]
        streams = end.get("streams") or [{}]
        out_of_order = int(streams[0].get("udp", {}).get("out_of_order", 0))
        return TransferResult(goodput, 0, _samples(intervals), lost, s.get("jitter_ms"), out_of_order)
    goodput = end["sum_received"]["bits_per_second"] / 1e6
    retrans = int(end["sum_sent"].get("retransmits", 0))
    if direction == "up":
        server_json = data.get("server_output_json")
        if not server_json or not server_json.get("intervals"):
            raise LabError("iperf3 gave no receiver-side intervals for an upload")
        intervals = server_json["intervals"]
    else:
        intervals = data["intervals"]
    return TransferResult(goodput, retrans, _samples(intervals))


def quic_transfer(ns: Namespaces, server_ip: str, seconds: float, direction: str,
                  port: int = 4433) -> TransferResult:
    """One bulk transfer over one QUIC connection (aioquic, CUBIC) between the site and a
    server in the gateway namespace; up: the site sends. Receiver-side samples and the
    receiver's socket overflows; QUIC's losses are not counted (retransmits 0)."""
    quicperf = [sys.executable, "-m", "braid.lab.quicperf"]
    server = ns.popen("gw", [*quicperf, "server", server_ip, str(port), f"{seconds + 60:g}"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if "ready" not in server.stdout.readline():
            raise LabError("the QUIC transfer's server did not start (is aioquic installed?)")
        proc = ns.run("site", [*quicperf, "client", server_ip, str(port), f"{seconds:g}", direction],
                      check=False, timeout=seconds + 90)
        if proc.returncode != 0 or not proc.stdout.strip():
            raise LabError(f"QUIC transfer failed: {(proc.stderr or '')[-300:]}")
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    samples = [(float(t), float(mbit)) for t, mbit in data["samples"]]
    return TransferResult(float(data["goodput_mbit"]), 0, samples,
                          receiver_drops=int(data.get("socket_drops", 0)))


class Pinger:
    """ping at an interval in the background; RTTs with their (relative) send times."""

    def __init__(self, ns: Namespaces, target: str, interval_ms: float, seconds: float) -> None:
        self.t0 = time.time()
        count = max(1, int(seconds * 1000 / interval_ms))
        self.proc = ns.popen("site", ["ping", "-n", "-D", "-i", f"{interval_ms / 1000:.3f}", "-c", str(count),
                                      "-W", "2", target], stdout=subprocess.PIPE, text=True)
        self.sent = count

    def result(self) -> list[tuple[float, float]]:
        out, _ = self.proc.communicate(timeout=120)
        rtts = []
        for line in out.splitlines():
            m = PING_LINE.match(line)
            if m:
                rtts.append((float(m.group(1)) - self.t0, float(m.group(3))))
        return rtts


SS_FIELD = re.compile(r"\b(cwnd|bytes_acked|rtt|busy|rwnd_limited|sndbuf_limited|mss):([0-9.]+)")


def parse_ss(text: str) -> list[dict[str, float]]:
    """The numbers `ss -tinH` gives per connection (its second line of each pair): cwnd
    (packets), mss, bytes_acked, rtt (ms), and busy, rwnd_limited, sndbuf_limited (ms)."""
    out = []
    for line in text.splitlines():
        fields = {k: float(v) for k, v in SS_FIELD.findall(line)}
        if "bytes_acked" in fields:
            out.append(fields)
    return out


class TcpWatch:
    """The inner TCP sender's own view of what held it back, from `ss -ti` in its namespace
    once a second: the share of its busy time it waited on the receiver's window
    (`rwnd_limited`) or its own send buffer (`sndbuf_limited`); the rest of the time its
    congestion window was the limit. Reads the connection that carried the most."""

    def __init__(self, ns: Namespaces, role: str, port: int = 5201, interval: float = 1.0) -> None:
        self._ns, self._role, self._port, self._interval = ns, role, port, interval
        self.latest: dict[str, float] | None = None
        self.cwnd_bytes_max = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        query = f"( sport = :{self._port} or dport = :{self._port} )"
        while not self._stop.wait(self._interval):
            proc = self._ns.run(self._role, ["ss", "-tinH", query], check=False)
            conns = parse_ss(proc.stdout or "")
            if conns:
                top = max(conns, key=lambda c: c["bytes_acked"])
                if self.latest is None or top["bytes_acked"] >= self.latest["bytes_acked"]:
                    self.latest = top
                    self.cwnd_bytes_max = max(self.cwnd_bytes_max, top.get("cwnd", 0) * top.get("mss", 0))

    def result(self) -> dict[str, float] | None:
        self._stop.set()
        self._thread.join(timeout=5)
        last = self.latest
        if last is None or not last.get("busy"):
            return None
        busy = last["busy"]
        return {"busy_s": round(busy / 1000, 2),
                "rwnd_limited": round(last.get("rwnd_limited", 0.0) / busy, 3),
                "sndbuf_limited": round(last.get("sndbuf_limited", 0.0) / busy, 3),
                "cwnd_max_bytes": int(self.cwnd_bytes_max), "rtt_ms_last": last.get("rtt", 0.0)}


def ping_rtts(ns: Namespaces, target: str, count: int = 20, interval_ms: float = 20) -> list[float]:
    pinger = Pinger(ns, target, interval_ms, count * interval_ms / 1000)
    return [r for _, r in pinger.result()]
