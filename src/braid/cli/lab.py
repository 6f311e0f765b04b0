"""`braid lab run|demo|bench`: scenarios over emulated uplinks, with results and plots."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from braid.lab.netns import LabError
from braid.lab.result import bench_summary
from braid.lab.scenario import ScenarioError, load
from braid.lab.topology import SHAPERS

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def add_parsers(sub: argparse._SubParsersAction) -> None:
    lab = sub.add_parser("lab", help="run scenarios over emulated uplinks (root)")
    labsub = lab.add_subparsers(dest="lab_command", required=True)
    p = labsub.add_parser("run", help="run one scenario file")
    p.add_argument("scenario")
    p.add_argument("--json", type=Path, help="write the result JSON here")
    p.add_argument("--plot", type=Path, help="write the PNG plot here")
    p.add_argument("--tunnel-only", action="store_true", help="skip baselines and emulator fidelity")
    _shaper_option(p)
    p.set_defaults(func=cmd_run)
    p = labsub.add_parser("demo", help="fibre + 4G + ADSL: each link alone, then braid")
    p.add_argument("--out", type=Path, default=Path("lab-results"), help="folder for JSON and plot")
    p.set_defaults(func=cmd_demo)
    p = labsub.add_parser("bench", help="run every scenario of a folder, print one table")
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path, default=Path("lab-results"), help="folder for JSON and plots")
    _shaper_option(p)
    p.set_defaults(func=cmd_bench)
    p = labsub.add_parser("perf", help="braid's own throughput and CPU per GB, one TCP flow over "
                          "an unshaped veth, each direction (JSON out)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--json", type=Path, help="write the result JSON here")
    p.set_defaults(func=cmd_perf)
    p = labsub.add_parser("site", help="a site living on braid: full tunnel, NAT, restarts, "
                          "uplinks that change", description="Builds a LAN host, a site router with "
                          "a fibre and a CGNAT 4G, an Internet core, a VPS gateway and a server in "
                          "namespaces, runs braid from configs with routes and nat only, and measures "
                          "LAN-to-server goodput and the outage of each event.")
    p.add_argument("--json", type=Path, help="write the result JSON here")
    p.set_defaults(func=cmd_site)


def _shaper_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shaper", choices=SHAPERS, default="emulator",
                   help="what shapes each link's rate and queue: the userspace emulator (default) "
                   "or the kernel's tbf (loss, delay and jitter stay in the emulator)")


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise LabError(f"braid lab {what} needs root (it creates network namespaces)")
    # SIGTERM unwinds like Ctrl-C, so every namespace and process of the run is removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _console(stderr: bool = True) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, width=None if sys.stdout.isatty() else 200)


def _run_with_progress(scenario_path: Path, json_out: Path | None, png_out: Path | None,
                       tunnel_only: bool = False, shaper: str = "emulator") -> list[dict[str, Any]]:
    from braid.lab.run import run_scenario

    sc = load(scenario_path)
    console = _console()
    with console.status(f"[bold]{sc.name}[/]") as status:
        def progress(msg: str) -> None:
            status.update(f"[bold]{sc.name}[/]: {msg}")
            console.log(msg)
        return run_scenario(sc, json_out, png_out, tunnel_only=tunnel_only, progress=progress,
                            shaper=shaper)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _outages(outages: list[dict[str, Any]]) -> str:
    """Per outage, seconds until goodput reached 0.9 of the other links' capacity (">L": not
    within the outage, which lasted L s)."""
    return ", ".join(_fmt(o["recovery_s"]) if o["recovery_s"] is not None else f">{o['lasted_s']:g}"
                     for o in outages) or "-"


def summary_table(results: list[dict[str, Any]], title: str) -> Table:
    from rich.table import Table

    table = Table(title=title)
    for col in ("scenario", "dir", "links alone Mbit/s", "sum", "capacity", "braid Mbit/s", "efficiency",
                "cap. eff.", "max stall ms", "outage: 0.9 of the rest in s",
                "RTT idle/load p50/p99 ms", "retrans", "CPU s cl/gw/emu",
                "emulator"):
        table.add_column(col)
    for r in results:
        alone = ", ".join(f"{k} {v:.1f}" for k, v in (r.get("baselines_mbit") or {}).items()) or "-"
        rtt = r["rtt_ms"]
        cpu = r["cpu_s"]
        table.add_row(
            r["scenario"], r["direction"], alone, _fmt(r["baseline_sum_mbit"], 1),
            _fmt(r.get("capacity_sum_mbit"), 1), _fmt(r["goodput_mbit"], 1), _fmt(r["efficiency"]),
            _fmt(r["capacity_efficiency"]),
            _fmt(r["max_stall_ms"], 0), _outages(r.get("outages") or []),
            "/".join(_fmt(rtt[k], 1) for k in ("idle_p50", "load_p50", "load_p99"))
            + (f" ({r['pings_lost']} pings lost)" if r.get("pings_lost") else ""),
            str(r["retransmits"]),
            "/".join(_fmt(cpu.get(k), 1) for k in ("client", "gateway", "emulator")),
            "ok" if r.get("emulator_ok") else "; ".join(r.get("emulator_flags", [])) or "not measured")
    return table


def cmd_run(args: argparse.Namespace) -> int:
    try:
        _need_root("run")
        results = _run_with_progress(Path(args.scenario), args.json, args.plot, args.tunnel_only,
                                     args.shaper)
    except (ScenarioError, LabError) as exc:
        print(f"braid lab run: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ScenarioError) else 1
    if args.json is None:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=1))
    _console(stderr=False).print(summary_table(results, "braid lab run"))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        _need_root("demo")
        path = Path(str(resources.files("braid.lab") / "scenarios" / "fibre-4g-adsl.toml"))
        json_out, png_out = args.out / "demo.json", args.out / "demo.png"
        results = _run_with_progress(path, json_out, png_out)
    except (ScenarioError, LabError) as exc:
        print(f"braid lab demo: {exc}", file=sys.stderr)
        return 1
    _console(stderr=False).print(summary_table(results, "braid lab demo: fibre + 4G + ADSL, one TCP flow"))
    print(f"result: {json_out.resolve()}\nplot:   {png_out.resolve()}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        _need_root("bench")
        files = sorted(args.folder.glob("*.toml"))
        if not files:
            raise LabError(f"{args.folder}: no *.toml scenario files")
        scenarios = [load(f) for f in files]  # every file is checked before anything runs
    except (ScenarioError, LabError) as exc:
        print(f"braid lab bench: {exc}", file=sys.stderr)
        return 2
    all_results: list[dict[str, Any]] = []
    errors = 0
    for f, _sc in zip(files, scenarios, strict=True):
        try:
            all_results += _run_with_progress(f, args.out / f"{f.stem}.json", args.out / f"{f.stem}.png",
                                              shaper=args.shaper)
        except (LabError, OSError, ValueError) as exc:
            errors += 1
            print(f"braid lab bench: {f}: {exc}", file=sys.stderr)
    (args.out / "bench.json").write_text(json.dumps(all_results, indent=1))
    title = f"braid lab bench: {args.folder}" + (" (tbf shaper)" if args.shaper == "tbf" else "")
    _console(stderr=False).print(summary_table(all_results, title))
    summary = bench_summary(all_results)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    if summary["bulk_runs"]:
        s = summary
        print(f"{s['bulk_runs']} bulk runs: capacity efficiency median "
              f"{s['median_capacity_efficiency']:.3f}, worst {s['worst_capacity_efficiency']:.3f} "
              f"({s['worst']}); longest stall {s['max_stall_ms']:.0f} ms ({s['max_stall']})")
    print(f"results: {args.out.resolve()}")
    return 1 if errors else 0


def cmd_perf(args: argparse.Namespace) -> int:
    _need_root("braid lab perf")
    from braid.lab.perf import run_perf

    console = _console()
    result = run_perf(args.seconds, lambda msg: console.log(msg))
    text = json.dumps(result, indent=1)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text)
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    import tempfile

    from rich.table import Table

    from braid.lab.site import OneWay, run_site

    try:
        _need_root("site")
        console = _console()
        with tempfile.TemporaryDirectory(prefix="braid-site-") as tmp:
            result = run_site(Path(tmp), progress=console.log)
    except (LabError, OSError) as exc:
        print(f"braid lab site: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    table = Table(title="braid lab site: outage per event (LAN host pinging the server every 50 ms)")
    for col in ("event", "ping gap ms", "link back ms"):
        table.add_column(col)
    for o in result["outages"]:
        table.add_row(o["event"], str(o["ping_gap_ms"]), _fmt(o["link_back_ms"], 0))
    out = _console(stderr=False)
    out.print(table)
    out.print(f"LAN -> server {result['goodput_up_mbit']} Mbit/s, server -> LAN "
              f"{result['goodput_down_mbit']} Mbit/s over {result['links_mbit']}; the server sees "
              f"{result['server_sees']}")
    ow = result["oneway"]
    back = "never" if ow["back_after"] is None else f"{ow['back_after'] * 1000:.0f} ms"
    out.print(f"the 4G's upstream dies during an upload: {ow['before_mbit']} Mbit/s before, back to "
              f"{OneWay.RECOVERED} of the fibre alone ({ow['fibre_alone_mbit']} Mbit/s, "
              f"{OneWay.WINDOW} s mean) after {back}, the worst whole second from 1 s after the cut "
              f"{ow['worst_second_after']} Mbit/s; the 4G meanwhile: {ow['lte_during']}")
    out.print("Mbit/s per 0.1 s from the cut: " + " ".join(
        f"{m:g}" for t, m in ow["series"] if -0.5 < t <= 2.0))
    return 0
