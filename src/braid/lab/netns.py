"""Network namespaces with run-unique names, veth pairs between them, and exact cleanup.

Only namespaces this object created are ever deleted; nothing outside them is touched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Sequence
from typing import Any


class LabError(RuntimeError):
    pass


def sh(args: Sequence[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


class Namespaces:
    """A set of namespaces named <prefix>-<role>, created on demand, all removed by close()."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or f"braid-{os.getpid() % 100000}-{secrets.token_hex(2)}"
        self.names: dict[str, str] = {}
        self.procs: list[subprocess.Popen] = []

    def add(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        sh(["ip", "netns", "add", name])
        self.names[role] = name
        self.run(role, ["ip", "link", "set", "lo", "up"])
        return name

    def ns(self, role: str) -> str:
        return self.names[role]

    def cmd(self, role: str, args: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.names[role], *args]

    def run(self, role: str, args: Sequence[str], check: bool = True, timeout: float = 30
            ) -> subprocess.CompletedProcess:
        return sh(self.cmd(role, args), check=check, timeout=timeout)

    def popen(self, role: str, args: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        proc = subprocess.Popen(self.cmd(role, args), **kwargs)
        self.procs.append(proc)
        return proc

    def veth(self, a_role: str, a_if: str, b_role: str, b_if: str, mtu: int = 1500) -> None:
        """A veth pair with one end in each namespace; offloads off so every packet is a
        real wire-sized packet (userspace forwarders and rate limiters see what a link would)."""
        tmp_a, tmp_b = f"bt{secrets.token_hex(4)}", f"bt{secrets.token_hex(4)}"
        sh(["ip", "link", "add", tmp_a, "mtu", str(mtu), "type", "veth", "peer", "name", tmp_b,
            "mtu", str(mtu)])
        sh(["ip", "link", "set", tmp_a, "netns", self.names[a_role], "name", a_if])
        sh(["ip", "link", "set", tmp_b, "netns", self.names[b_role], "name", b_if])
        for role, ifname in ((a_role, a_if), (b_role, b_if)):
            self.run(role, ["ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off",
                            "tx", "off", "rx", "off"], check=False)
            self.run(role, ["ip", "link", "set", ifname, "up"])

    def stop_processes(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()

    def close(self) -> None:
        self.stop_processes()
        for name in self.names.values():
            pids = sh(["ip", "netns", "pids", name], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            sh(["ip", "netns", "delete", name], check=False)
        self.names.clear()

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
