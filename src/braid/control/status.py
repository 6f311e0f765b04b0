"""The status model a daemon reports: per link state and estimates, tunnel counters."""

from __future__ import annotations

import dataclasses
from typing import Any

from braid.core.sender import copies_on
from braid.core.session import Peer

from .metrics import Throughput


def link_counters(peer: Peer) -> dict[str, int]:
    out = {}
    for link in peer.bond.links:
        out[f"{peer.name}/{link.name}/tx"] = link.tx_bytes
        out[f"{peer.name}/{link.name}/rx"] = link.report.bytes
    return out


def _addr(addr: tuple) -> str:
    sockaddr = addr[0] if len(addr) == 2 and isinstance(addr[0], tuple) else addr
    return f"{sockaddr[0]}:{sockaddr[1]}"


def peer_status(peer: Peer, tput: Throughput, now: float) -> dict[str, Any]:
    bond = peer.bond
    snaps = [link.snapshot(now) for link in bond.links]
    total_tx = sum(snap.tx_bytes for snap in snaps) or 1
    links = []
    for link, snap in zip(bond.links, snaps, strict=True):
        view = dataclasses.asdict(snap)
        view["cuts"] = {"overdriven": view.pop("overdriven"), "braked": view.pop("braked")}
        key = f"{peer.name}/{snap.name}"
        view.update({
            "share": round(snap.tx_bytes / total_tx, 3),
            "addresses": [_addr(a) for a in peer.sources.addresses(snap.id)],
            "copying": copies_on(link),  # the sender's own test, not the rounded snapshot's
            "tx_throughput": tput.rates(f"{key}/tx"),
            "rx_throughput": tput.rates(f"{key}/rx"),
        })
        links.append(view)
    counters = dict(bond.stats)
    counters.update({
        "rx_datagrams": peer.stats.rx_datagrams, "tx_datagrams": peer.stats.tx_datagrams,
        "forged": peer.stats.forged, "replayed": peer.stats.replayed,
        "expired_keys": peer.stats.expired_keys, "stale": peer.stats.stale,
        "unsent": peer.stats.unsent,
        "address_limited": peer.sources.limited,  # not sent: an unvalidated address's 3x budget
        "reorder_held": bond.reorder.held, "reorder_held_bytes": bond.reorder.held_bytes,
        "reorder_limit_bytes": bond.reorder.max_bytes, "gaps_lost": bond.reorder.gaps_lost,
        "gaps_timed_out": bond.reorder.gaps_timed_out, "late": bond.reorder.late,
        "queue_room_ms": round(bond.tx.queue_room(now) * 1000),
    })
    return {"peer": peer.name, "established": peer.established, "links": links, "counters": counters}


def summary_line(peer: Peer, tput: Throughput, now: float) -> str:
    """One line per peer for `-v`: each link's state, rates this second, RTT and loss."""
    parts = []
    for snap in (link.snapshot(now) for link in peer.bond.links):
        tx = tput.rates(f"{peer.name}/{snap.name}/tx")["current_bps"] / 1e6
        rx = tput.rates(f"{peer.name}/{snap.name}/rx")["current_bps"] / 1e6
        rtt = "-" if snap.rtt_ms is None else f"{snap.rtt_ms:.0f}ms"
        mode = " standby" if snap.standby else ""
        parts.append(f"{snap.name} {snap.state}{mode} tx {tx:.2f} rx {rx:.2f} Mbit/s "
                     f"rtt {rtt} loss {snap.loss * 100:.1f}%")
    stats = peer.bond.stats
    return (f"{peer.name}: " + " | ".join(parts)
            + f" | resent {stats['resent']} queue drops {stats['queue_drops']}")
