"""The client's uplink sockets against a real kernel, in a namespace of the test's own: an
interface that comes up before its address arrives (a re-created PPPoE or veth interface)
is re-bound to its own address as soon as it has one."""

from __future__ import annotations

import json
import sys

import pytest

from braid.lab.netns import Namespaces

pytestmark = pytest.mark.root

# run inside the namespace: wan1 is up with no address, wan2 has one and the default route
SCRIPT = r"""
import json, socket, subprocess
from braid.io.uplinks import Uplinks
remote = (socket.AF_INET, ("198.51.100.7", 7000))
ups = Uplinks([(0, "fibre", "wan1", 1)], [remote], None, lambda s, i: None, lambda s: None)
ups.open_all()
up = ups.links[0]
before = {"source": up.source, "borrowed": up.borrowed}
ups.check()  # nothing changed: kept
kept = up.source
for cmd in (["ip", "addr", "add", "100.64.1.2/24", "dev", "wan1"],
            ["ip", "route", "add", "default", "via", "100.64.1.1", "dev", "wan1", "metric", "100"]):
    subprocess.run(cmd, check=True)
ups.check()  # what a netlink event for the new address calls
print(json.dumps({"before": before, "kept": kept, "after": up.source, "borrowed": up.borrowed,
                  "reopened": ups.reopened}))
"""


def test_an_interface_up_before_its_address_is_rebound_to_its_own_address():
    ns = Namespaces()
    try:
        ns.add("site")
        ns.add("isp")
        ns.veth("site", "wan1", "isp", "s1")
        ns.veth("site", "wan2", "isp", "s2")
        ns.run("site", ["ip", "addr", "add", "10.99.2.2/24", "dev", "wan2"])
        ns.run("site", ["ip", "route", "add", "default", "via", "10.99.2.1", "dev", "wan2",
                        "metric", "200"])
        out = ns.run("site", [sys.executable, "-c", SCRIPT]).stdout
    finally:
        ns.close()
    seen = json.loads(out)
    print("uplink bound to wan1 before and after its address arrived:", seen)
    assert seen["before"] == {"source": "10.99.2.2", "borrowed": True}  # the kernel's choice
    assert seen["kept"] == "10.99.2.2"
    assert seen["after"] == "100.64.1.2" and not seen["borrowed"]
