"""The status model a daemon reports: per link state and estimates, tunnel counters."""

from __future__ import annotations

from typing import Any

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


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def peer_status(peer: Peer, tput: Throughput, now: float) -> dict[str, Any]:
    bond = peer.bond
    total_tx = sum(link.tx_bytes for link in bond.links) or 1
    links = []
    for link in bond.links:
        links.append({
            "name": link.name,
            "id": link.id,
            "state": link.state.value,
            "state_rx": link.health.value,
            "state_tx": link.tx_health.value,
            "role": link.role,
            "standby": link.standby,
            "rtt_ms": _ms(link.srtt),
            "rttvar_ms": _ms(link.rttvar if link.srtt is not None else None),
            "min_rtt_ms": _ms(link.min_rtt.get(link.srtt) if link.srtt is not None else None),
            "loss": round(link.loss, 4),
            "capacity_bps": round(link.capacity()),
            "pacing_bps": round(link.pace_rate),
            "queue_delay_ms": _ms(link.queue_delay()),
            "queue_target_ms": _ms(link.queue_target()),
            "delay_noise_ms": _ms(link.delay_noise),
            "delivery_bps": round(link.recent_rate),
            "startup": link.startup,
            "estimator": link.est.mode.value,
            "cuts": {"overdriven": link.est.overdriven, "braked": link.est.braked},
            "reserved": link.reserved,
            "warming": link.warming(now),
            "share": round(link.tx_bytes / total_tx, 3),
            "tx_packets": link.tx_packets, "tx_bytes": link.tx_bytes,
            "rx_packets": link.report.packets, "rx_bytes": link.report.bytes,
            "addresses": [_addr(a) for a in peer.sources.addresses(link.id)],
            "tx_throughput": tput.rates(f"{peer.name}/{link.name}/tx"),
            "rx_throughput": tput.rates(f"{peer.name}/{link.name}/rx"),
        })
    counters = dict(bond.stats)
    counters.update({
        "rx_datagrams": peer.stats.rx_datagrams, "tx_datagrams": peer.stats.tx_datagrams,
        "forged": peer.stats.forged, "replayed": peer.stats.replayed,
        "expired_keys": peer.stats.expired_keys,
        "address_limited": peer.sources.limited,  # not sent: an unvalidated address's 3x budget
        "reorder_held": bond.reorder.held, "reorder_held_bytes": bond.reorder.held_bytes,
        "reorder_limit_bytes": bond.reorder.max_bytes, "gaps_lost": bond.reorder.gaps_lost,
        "gaps_timed_out": bond.reorder.gaps_timed_out, "late": bond.reorder.late,
    })
    return {"peer": peer.name, "established": peer.established, "links": links, "counters": counters}


def summary_line(peer: Peer, tput: Throughput) -> str:
    """One line per peer for `-v`: each link's state, rates this second, RTT and loss."""
    parts = []
    for link in peer.bond.links:
        tx = tput.rates(f"{peer.name}/{link.name}/tx")["current_bps"] / 1e6
        rx = tput.rates(f"{peer.name}/{link.name}/rx")["current_bps"] / 1e6
        rtt = "-" if link.srtt is None else f"{link.srtt * 1000:.0f}ms"
        mode = " standby" if link.standby else ""
        parts.append(f"{link.name} {link.state.value}{mode} tx {tx:.2f} rx {rx:.2f} Mbit/s "
                     f"rtt {rtt} loss {link.loss * 100:.1f}%")
    stats = peer.bond.stats
    return (f"{peer.name}: " + " | ".join(parts)
            + f" | resent {stats['resent']} queue drops {stats['queue_drops']}")
