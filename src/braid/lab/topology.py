"""Lab topology: site <-> emulator <-> gateway namespaces, one veth pair per side per link,
the emulator bridging them, and braid started through its public CLI."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

from braid.core.timers import WARMUP_TIME

from .netns import LabError, Namespaces
from .scenario import Scenario

GW_PUBLIC = "10.200.0.1"
TUNNEL_GW = "10.77.0.1"
TUNNEL_CLIENT = "10.77.0.2"
BRAID = [sys.executable, "-m", "braid.cli.main"]
SHAPERS = ("emulator", "tbf")


def link_addr(i: int, side: str) -> str:
    return f"10.201.{i}.{1 if side == 'site' else 2}"


def _key() -> tuple[str, str]:
    private = subprocess.run([*BRAID, "keygen"], capture_output=True, text=True, check=True).stdout
    public = subprocess.run([*BRAID, "pubkey"], input=private, capture_output=True, text=True,
                            check=True).stdout
    return private.strip(), public.strip()


class Lab:
    """Builds the namespaces and the emulator; starts and stops braid."""

    def __init__(self, scenario: Scenario, workdir: Path, seed: int = 1,
                 shaper: str = "emulator") -> None:
        """`shaper`: "emulator" (rate and queue in the userspace emulator) or "tbf" (the
        kernel's tbf on the emulator's egress veths; loss, delay and jitter stay in it)."""
        if shaper not in SHAPERS:
            raise LabError(f"unknown shaper {shaper!r} (known: {', '.join(SHAPERS)})")
        if shaper == "tbf" and any(link.trace for link in scenario.links):
            raise LabError(f"{scenario.name}: a link with a rate trace needs the emulator shaper")
        self.shaper = shaper
        self.scenario = scenario
        self.dir = workdir
        self.ns = Namespaces()
        self.emulator: subprocess.Popen | None = None
        self.client: subprocess.Popen | None = None
        self.gateway: subprocess.Popen | None = None
        self.seed = seed
        self._logs: list = []

    # ------------------------------------------------------------------ build

    def build(self, direct: bool = False) -> None:
        """`direct`: one veth pair per link between site and gateway, no emulator (the
        links are then as fast as the host: `braid lab perf`)."""
        ns = self.ns
        for role in ("site", "gw") if direct else ("site", "emu", "gw"):
            ns.add(role)
            for key in ("all", "default"):
                ns.run(role, ["sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"], check=False)
        ns.run("gw", ["ip", "addr", "add", f"{GW_PUBLIC}/32", "dev", "lo"])
        spec_links = []
        for i, link in enumerate(self.scenario.links):
            if direct:
                ns.veth("site", f"u{i}", "gw", f"u{i}")
            else:
                ns.veth("site", f"u{i}", "emu", f"s{i}")
                ns.veth("emu", f"g{i}", "gw", f"u{i}")
            ns.run("site", ["ip", "addr", "add", f"{link_addr(i, 'site')}/24", "dev", f"u{i}"])
            ns.run("gw", ["ip", "addr", "add", f"{link_addr(i, 'gw')}/24", "dev", f"u{i}"])
            ns.run("site", ["ip", "route", "add", f"{GW_PUBLIC}/32", "via", link_addr(i, "gw"),
                            "dev", f"u{i}", "metric", str(i + 1)])
            spec_links.append({"name": link.name, "site_if": f"s{i}", "gw_if": f"g{i}",
                               "up_mbit": link.up_mbit, "down_mbit": link.down_mbit,
                               "delay_ms": link.delay_ms, "jitter_ms": link.jitter_ms,
                               "loss": link.loss, "queue_ms": link.queue_ms, "trace": link.trace})
        if direct:
            self._wait_link_ping()
            return
        spec = {"links": spec_links, "seed": self.seed, "shaper": self.shaper,
                "events": [{"at_s": e.at_s, "link": e.link, "set": e.changes} for e in self.scenario.events]}
        self.emulator = ns.popen("emu", [sys.executable, "-m", "braid.lab.emulator", json.dumps(spec)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._wait_link_ping()

    def _wait_link_ping(self) -> None:
        for i in range(len(self.scenario.links)):
            end = time.monotonic() + 10
            while self.ns.run("site", ["ping", "-c", "1", "-W", "1", link_addr(i, "gw")],
                              check=False).returncode != 0:
                if time.monotonic() > end or (self.emulator is not None and self.emulator.poll() is not None):
                    raise LabError(f"link {self.scenario.links[i].name}: no ping through the emulator")

    def emu(self, command: str) -> None:
        assert self.emulator is not None and self.emulator.stdin is not None
        self.emulator.stdin.write(command + "\n")
        self.emulator.stdin.flush()

    # ------------------------------------------------------------------ braid

    def stop_braid(self) -> None:
        """SIGTERM both daemons (they remove their devices and sockets) and wait."""
        for proc in (self.client, self.gateway):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in (self.client, self.gateway):
            if proc is not None:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self.client = self.gateway = None

    def start_braid(self) -> None:
        """Start a fresh gateway and client (new keys, new state) and wait for the tunnel."""
        self.stop_braid()
        gk, gp = _key()
        ck, cp = _key()
        d = self.dir
        (d / "gateway.toml").write_text(f'''[gateway]
private_key = "{gk}"
listen = "0.0.0.0:7000"
address = "{TUNNEL_GW}/24"
control = "{d}/gateway.sock"

[[client]]
name = "site"
public_key = "{cp}"
address = "{TUNNEL_CLIENT}/32"
''')
        links = "".join(f'\n[[link]]\nname = "{link.name}"\nbind = "u{i}"\n'
                        for i, link in enumerate(self.scenario.links))
        (d / "client.toml").write_text(f'''[client]
private_key = "{ck}"
address = "{TUNNEL_CLIENT}/24"
control = "{d}/client.sock"
state_dir = "{d}"

[gateway]
public_key = "{gp}"
endpoint = "{GW_PUBLIC}:7000"
''' + links)
        gw_log = open(d / "gateway.log", "w")  # noqa: SIM115
        cl_log = open(d / "client.log", "w")  # noqa: SIM115
        self._logs += [gw_log, cl_log]
        self.gateway = self.ns.popen("gw", [*BRAID, "gateway", "-c", str(d / "gateway.toml")],
                                     stderr=gw_log)
        end = time.monotonic() + 10
        while not (d / "gateway.sock").exists():
            if time.monotonic() > end or self.gateway.poll() is not None:
                raise LabError(f"braid gateway did not start (see {d / 'gateway.log'})")
            time.sleep(0.05)
        self.client = self.ns.popen("site", [*BRAID, "client", "-c", str(d / "client.toml")],
                                    stderr=cl_log)
        end = time.monotonic() + 15
        while self.ns.run("site", ["ping", "-c", "1", "-W", "1", TUNNEL_GW], check=False).returncode != 0:
            if time.monotonic() > end or self.client.poll() is not None:
                raise LabError(f"no ping through the tunnel (see {d / 'client.log'})")
        # the links' warm-up (padding that measures each new link) is traffic: wait it out, so
        # that what follows starts on an idle tunnel; then let every link be probed
        end = time.monotonic() + WARMUP_TIME + 3.0
        while time.monotonic() < end and not self._settled():
            time.sleep(0.1)
        time.sleep(1.0)

    def _settled(self) -> bool:
        """Every link is up at both ends, and none is warming up."""
        links = [link for role in ("client", "gateway")
                 for peer in self.status(role)["peers"] for link in peer["links"]]
        return bool(links) and all(link["state"] == "up" and not link["warming"] for link in links)

    def status(self, role: str = "client") -> dict:
        sock = self.dir / f"{role}.sock"
        out = self.ns.run("site" if role == "client" else "gw", [*BRAID, "status", "--json", "-s", str(sock)])
        return json.loads(out.stdout)

    def pids(self) -> dict[str, int]:
        out = {}
        for name, proc in (("emulator", self.emulator), ("client", self.client), ("gateway", self.gateway)):
            if proc is not None:
                # ip netns exec execs the command, so the Popen pid is the process itself
                out[name] = proc.pid
        return out

    def close(self) -> None:
        if self.emulator is not None and self.emulator.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.emu("quit")
        self.ns.close()
        for f in self._logs:
            f.close()


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
