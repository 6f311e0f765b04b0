"""The lab itself, as root: the emulator's accuracy in namespaces, and one short end-to-end
`braid lab run` through the CLI (the scenario CI runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from braid.lab.scenario import parse
from braid.lab.topology import Lab, link_addr
from braid.lab.workload import iperf, ping_rtts

pytestmark = pytest.mark.root

SCENARIO = """name = "ci-short"
duration_s = 4
[[link]]
name = "fast"
rate_mbit = 12
delay_ms = 10
queue_ms = 50
[[link]]
name = "slow"
rate_mbit = 6
delay_ms = 25
jitter_ms = 10
loss = 0.05
queue_ms = 100
[workload]
kind = "tcp"
direction = "up"
"""


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (network namespaces)")
    sc = parse(SCENARIO, Path("ci-short.toml"))
    lab = Lab(sc, tmp_path_factory.mktemp("lab"))
    try:
        lab.build()
        yield lab
    finally:
        lab.close()


def test_emulated_rate_within_5_percent(lab):
    # as the lab's own fidelity check measures (UDP at 1.2 x the rate, first second left out).
    # The clean link only: on the lossy, jittery link a first saturating blast sometimes reads
    # 5-26 % low, for a reason not yet found (open in issue 4's note); every lab run still
    # measures and flags each link's rate, that one included.
    blast = iperf(lab.ns, link_addr(0, "gw"), 5, "up", udp_mbit=12.0 * 1.2, port=5230, omit=1.0)
    wire = blast.goodput_mbit * 1428 / 1400
    assert abs(wire / 12.0 - 1) < 0.05, f"{wire:.2f} Mbit/s on the wire for 12"


def test_emulated_delay_within_1ms(lab):
    rtts = ping_rtts(lab.ns, link_addr(0, "gw"), count=30, interval_ms=20)
    assert len(rtts) >= 29
    assert abs(min(rtts) - 20.0) < 1.0 and abs(sorted(rtts)[len(rtts) // 2] - 20.0) < 1.5, rtts


def test_jitter_keeps_order_and_loss_matches(lab):
    # idle path first: one-way 25 ms + U(0, 10 ms) each way -> mean RTT 60 ms, spread ~20 ms
    rtts = ping_rtts(lab.ns, link_addr(1, "gw"), count=80, interval_ms=20)
    assert abs(sum(rtts) / len(rtts) - 60.0) < 1.5 and min(rtts) >= 50 and max(rtts) > min(rtts) + 8, rtts
    udp = iperf(lab.ns, link_addr(1, "gw"), 4, "up", udp_mbit=3, port=5231)
    assert udp.udp_out_of_order == 0, "the emulator reordered packets of one path"
    lost = udp.udp_loss
    assert 0.03 < lost < 0.07, f"loss {lost:.3f} for a configured 0.05"


def test_short_lab_run_end_to_end(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (network namespaces)")
    scenario = tmp_path / "ci-short.toml"
    scenario.write_text(SCENARIO)
    before = _netns()
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    proc = subprocess.run([sys.executable, "-m", "braid.cli.main", "lab", "run", str(scenario),
                           "--json", str(out_json), "--plot", str(out_png)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out_json.read_text())
    for key in ("goodput_mbit", "baseline_sum_mbit", "best_link_mbit", "efficiency", "capacity_sum_mbit",
                "capacity_efficiency", "retransmits", "max_stall_ms", "rtt_ms", "per_link", "samples",
                "cpu_s", "emulator_fidelity"):
        assert key in r, key
    assert r["goodput_mbit"] > 0.5 * r["best_link_mbit"]
    assert r["capacity_sum_mbit"] == pytest.approx(12 + 6 * 0.95)
    assert set(r["per_link"]) == {"fast", "slow"}
    assert r["per_link"]["fast"]["tx_bytes"] > 0
    assert len(r["samples"]) >= 30
    assert set(r["cpu_s"]) == {"client", "gateway", "emulator"}
    assert set(r["emulator_fidelity"]) == {"fast", "slow"}
    assert out_png.stat().st_size > 10_000
    assert _netns() == before, "the lab left namespaces behind"


def test_bad_scenario_is_a_one_line_error(tmp_path):
    scenario = tmp_path / "bad.toml"
    scenario.write_text(SCENARIO.replace("loss = 0.05", "loss = 5"))
    proc = subprocess.run([sys.executable, "-m", "braid.cli.main", "lab", "run", str(scenario)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "link[1].loss" in proc.stderr


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupted_lab_run_removes_everything(tmp_path, sig):
    import signal
    import time

    scenario = tmp_path / "ci-short.toml"
    scenario.write_text(SCENARIO)
    before = _netns()
    proc = subprocess.Popen([sys.executable, "-m", "braid.cli.main", "lab", "run", str(scenario),
                             "--tunnel-only"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 30
    while len(_netns() - before) < 3 and time.monotonic() < end:
        time.sleep(0.2)
    assert len(_netns() - before) == 3, "the run never built its namespaces"
    time.sleep(2)  # mid-run: emulator up, braid starting
    proc.send_signal(getattr(signal, sig))
    proc.wait(timeout=60)
    assert proc.returncode != 0
    # (Namespaces.close kills every process of a namespace before deleting it)
    assert _netns() == before, "an interrupted run left namespaces behind"


def test_tbf_shaper_keeps_rate_and_delay_and_follows_events(tmp_path):
    """`--shaper tbf`: the kernel's tbf shapes each direction (counting IP bytes, as the
    emulator does), the emulator only delays; a rate event is applied to the qdisc."""
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (network namespaces)")
    sc = parse(SCENARIO + '[[event]]\nat_s = 0.2\nlink = "fast"\nset = { rate_mbit = 6 }\n',
               Path("ci-tbf.toml"))
    lab = Lab(sc, tmp_path, shaper="tbf")
    try:
        lab.build()
        qdisc = lab.ns.run("emu", ["tc", "qdisc", "show", "dev", "g0"]).stdout
        assert "tbf" in qdisc and "12Mbit" in qdisc, qdisc
        blast = iperf(lab.ns, link_addr(0, "gw"), 4, "up", udp_mbit=12.0 * 1.2, port=5232, omit=1.0)
        wire = blast.goodput_mbit * 1428 / 1400
        rtts = ping_rtts(lab.ns, link_addr(0, "gw"), count=20, interval_ms=20)
        print(f"tbf: {wire:.2f} Mbit/s on the wire for 12; idle RTT min {min(rtts):.2f} ms for 20")
        assert abs(wire / 12.0 - 1) < 0.05, f"{wire:.2f} Mbit/s on the wire for 12"
        assert abs(min(rtts) - 20.0) < 1.0, rtts
        lab.emu("start")
        deadline = time.monotonic() + 5
        while "6Mbit" not in lab.ns.run("emu", ["tc", "qdisc", "show", "dev", "g0"]).stdout:
            assert time.monotonic() < deadline, "the rate event never reached the qdisc"
            time.sleep(0.1)
    finally:
        lab.close()


def test_one_quic_transfer_over_a_lab_link(lab):
    """The `quic` workload (aioquic, CUBIC): receiver-side samples, both ways."""
    from braid.lab.workload import quic_transfer

    for direction in ("up", "down"):
        result = quic_transfer(lab.ns, link_addr(0, "gw"), 3, direction, port=4440)
        print(f"one QUIC transfer over the 12 Mbit/s link, {direction}: {result.goodput_mbit:.1f} Mbit/s")
        assert 6.0 < result.goodput_mbit <= 12.5
        assert len(result.samples) >= 20
