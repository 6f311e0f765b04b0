"""Each link on the outer IP version it can reach: an uplink with IPv4 only beside one
with IPv6 only, the gateway listening on both ([::]:7000), its endpoint given as a name
with an A and an AAAA record (the site namespace's own hosts file) or as a list."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from braid.lab.netns import Namespaces
from tests.integration.test_tunnel import GW_ADDR, GW_ADDR6, Tunnel, site_hosts

pytestmark = pytest.mark.root
NAME = "gw.braid.test"


@pytest.mark.parametrize("form", ["name", "list"])
def test_each_link_uses_the_family_it_can_reach(tmp_path, form):
    with site_hosts(f"127.0.0.1 localhost\n{GW_ADDR6} {NAME}\n{GW_ADDR} {NAME}\n") as (ns, _):
        line = (f'endpoint = "{NAME}:7000"' if form == "name"
                else f'endpoints = ["[{GW_ADDR6}]:7000", "{GW_ADDR}:7000"]')
        tunnel = Tunnel(ns, tmp_path, families=(4, 6), endpoint_line=line, listen="[::]:7000")
        links = {lk["name"]: lk for lk in tunnel.status()["peers"][0]["links"]}
        print({name: (lk["local_address"], lk["remote_address"]) for name, lk in links.items()})
        assert links["l0"]["local_address"] == "10.201.0.1"
        assert links["l0"]["remote_address"] == f"{GW_ADDR}:7000"
        assert links["l1"]["local_address"] == "fd01:1::1"
        assert links["l1"]["remote_address"] == f"[{GW_ADDR6}]:7000"
        for way, key in (("upload", "tx_bytes"), ("download", "rx_bytes")):
            before = {lk["name"]: lk[key] for lk in tunnel.status()["peers"][0]["links"]}
            server = ns.popen("gw", ["iperf3", "-s", "-1", "-B", "10.77.0.1"],
                              stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            ns.run("site", ["iperf3", "-c", "10.77.0.1", "-t", "4",
                            *(["-R"] if way == "download" else [])], timeout=30)
            server.wait(timeout=10)
            after = {lk["name"]: lk[key] for lk in tunnel.status()["peers"][0]["links"]}
            moved = {name: round((after[name] - before[name]) / 1e6, 1) for name in before}
            print(f"{way} through the tunnel: MB per link {moved}")
            assert all(mb > 1.0 for mb in moved.values()), moved  # both families carry it
        assert tunnel.internal_errors() == {"client": 0, "gateway": 0}


def test_a_link_that_loses_its_ipv6_route_moves_to_ipv4(tmp_path):
    """A dual-stack uplink on IPv6 (listed first) whose IPv6 route goes: it re-binds to the
    gateway's IPv4 address on the netlink event, with no restart."""
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces)")
    with Namespaces() as ns:
        line = f'endpoints = ["[{GW_ADDR6}]:7000", "{GW_ADDR}:7000"]'
        tunnel = Tunnel(ns, tmp_path, families=(4, 46), endpoint_line=line, listen="[::]:7000")

        def l1() -> dict:
            return next(lk for lk in tunnel.status()["peers"][0]["links"] if lk["name"] == "l1")
        assert l1()["remote_address"] == f"[{GW_ADDR6}]:7000"
        start = time.monotonic()
        ns.run("site", ["ip", "route", "del", f"{GW_ADDR6}/128", "dev", "up1"])
        moved = None
        while time.monotonic() - start < 10:
            link = l1()
            if link["remote_address"] == f"{GW_ADDR}:7000" and moved is None:
                moved = time.monotonic() - start
            if moved is not None and link["state"] == "up" and link["rx_bytes"] > 0:
                break
            time.sleep(0.05)
        rx = l1()["rx_bytes"]
        time.sleep(1.0)
        print(f"IPv6 route removed: l1 on IPv4 after {moved * 1000 if moved else -1:.0f} ms, "
              f"state {l1()['state']}")
        assert moved is not None and moved < 2.0
        assert l1()["state"] == "up" and l1()["rx_bytes"] > rx  # heard on its new address
        assert tunnel.internal_errors() == {"client": 0, "gateway": 0}
