"""The gateway's endpoint given by name, and the name moved to a new address (a VPS
renumbered, DNS updated): once no link hears the gateway, the client looks the name up
again and follows it, with no restart. The name resolves through the site namespace's
own hosts file (`ip netns exec` mounts /etc/netns/NAME/hosts over /etc/hosts)."""

from __future__ import annotations

import pytest

from tests.integration.test_tunnel import GW_ADDR, Tunnel, site_hosts

pytestmark = pytest.mark.root
NAME, NEW_ADDR = "gw.braid.test", "10.200.0.2"


def test_a_gateway_that_moves_to_a_new_address_is_followed(tmp_path):
    with site_hosts(f"127.0.0.1 localhost\n{GW_ADDR} {NAME}\n") as (ns, hosts):
        tunnel = Tunnel(ns, tmp_path, endpoint=NAME)
        ns.run("gw", ["ip", "addr", "add", f"{NEW_ADDR}/32", "dev", "lo"])
        for i in range(2):
            ns.run("site", ["ip", "route", "add", f"{NEW_ADDR}/32", "via", f"10.201.{i}.2",
                            "dev", f"up{i}", "metric", str(i + 1)])

        def move() -> None:
            hosts.write_text(f"127.0.0.1 localhost\n{NEW_ADDR} {NAME}\n")  # same inode: seen
            ns.run("gw", ["ip", "addr", "del", f"{GW_ADDR}/32", "dev", "lo"])
        gap = tunnel.ping_gaps(14, move)
        log = (tmp_path / "client.log").read_text()
        moved = [line for line in log.splitlines() if "moved" in line]
        print(f"gateway moved {GW_ADDR} -> {NEW_ADDR}: longest ping gap {gap * 1000:.0f} ms; "
              f"{moved[-1] if moved else 'not followed'}")
        assert moved and NEW_ADDR in moved[-1]
        assert gap <= 8.0
        assert tunnel._pings()
