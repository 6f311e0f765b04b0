"""Scenario files (LAB.md): one topology + one workload. Unknown keys and bad values are errors
naming the file, the line and the key."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

LINK_KEYS = {"name", "rate_mbit", "up_mbit", "down_mbit", "delay_ms", "jitter_ms", "loss",
             "queue_ms", "trace"}
EVENT_SET_KEYS = {"up", "rate_mbit", "up_mbit", "down_mbit", "delay_ms", "jitter_ms", "loss", "queue_ms"}
KINDS = ("tcp", "udp", "ping", "mixed", "quic")
DIRECTIONS = ("up", "down", "both")


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class LinkSpec:
    name: str
    up_mbit: float
    down_mbit: float
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    queue_ms: float = 50.0
    trace: str | None = None

    def rate(self, direction: str) -> float:
        return self.up_mbit if direction == "up" else self.down_mbit

    def apply(self, changes: dict[str, Any]) -> LinkSpec:
        c = dict(changes)
        c.pop("up", None)
        if "rate_mbit" in c:
            rate = c.pop("rate_mbit")
            c["up_mbit"] = c["down_mbit"] = rate
        return replace(self, **c)


@dataclass(frozen=True)
class Event:
    at_s: float
    link: str
    changes: dict[str, Any]


@dataclass(frozen=True)
class Workload:
    kind: str = "tcp"
    direction: str = "up"
    flows: int = 1
    cc: str = "cubic"
    rate_mbit: float = 10.0  # udp
    interval_ms: float = 100.0  # ping (and the RTT probe during bulk runs)

    def directions(self) -> list[str]:
        return ["up", "down"] if self.direction == "both" else [self.direction]


@dataclass(frozen=True)
class Scenario:
    name: str
    duration_s: float
    links: tuple[LinkSpec, ...]
    events: tuple[Event, ...] = ()
    workload: Workload = field(default_factory=Workload)
    path: str = ""


class _Where:
    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text

    def error(self, key: str, reason: str, occurrence: int = 0) -> ScenarioError:
        leaf = key.rsplit(".", 1)[-1].split("[")[0]
        matches = list(re.finditer(rf"^\s*{re.escape(leaf)}\s*=", self.text, re.M))
        if not matches:  # a key inside an inline table, or a [[table]] itself
            matches = list(re.finditer(rf"[{{,]\s*{re.escape(leaf)}\s*=", self.text))
        if not matches:
            matches = list(re.finditer(rf"^\s*\[+\s*{re.escape(leaf)}\s*\]+", self.text, re.M))
        line = ""
        if matches:
            m = matches[min(occurrence, len(matches) - 1)]
            line = f":{self.text.count(chr(10), 0, m.start()) + 1}"
        return ScenarioError(f"{self.path}{line}: {key}: {reason}")


def _number(w: _Where, table: dict, key: str, where: str, lo: float, hi: float, default: Any = ...,
            occurrence: int = 0) -> float:
    full = f"{where}.{key}" if where else key
    if key not in table:
        if default is ...:
            raise w.error(full, "missing", occurrence)
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise w.error(full, f"must be a number, got {value!r}", occurrence)
    if not lo <= value <= hi:
        raise w.error(full, f"must be between {lo} and {hi}, got {value}", occurrence)
    return float(value)


def _unknown(w: _Where, table: dict, allowed: set[str], where: str, occurrence: int = 0) -> None:
    for key in table:
        if key not in allowed:
            raise w.error(f"{where}.{key}" if where else key, "unknown key", occurrence)


def _link(w: _Where, raw: Any, i: int, base: Path) -> LinkSpec:
    where = f"link[{i}]"
    if not isinstance(raw, dict):
        raise w.error("link", "must be [[link]] tables")
    _unknown(w, raw, LINK_KEYS, where, i)
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,11}", name):
        raise w.error(f"{where}.name", "must be 1-12 lowercase letters, digits, _ or -", i)
    rate = _number(w, raw, "rate_mbit", where, 0.01, 10000, None, i)
    up = _number(w, raw, "up_mbit", where, 0.01, 10000, rate, i)
    down = _number(w, raw, "down_mbit", where, 0.01, 10000, rate, i)
    if up is None or down is None:
        raise w.error(f"{where}.rate_mbit", "give rate_mbit, or up_mbit and down_mbit", i)
    trace = raw.get("trace")
    if trace is not None:
        if not isinstance(trace, str) or not (base / trace).is_file():
            raise w.error(f"{where}.trace", f"no such trace file {trace!r}", i)
        trace = str(base / trace)
    return LinkSpec(name, up, down, _number(w, raw, "delay_ms", where, 0, 5000, 0.0, i),
                    _number(w, raw, "jitter_ms", where, 0, 5000, 0.0, i),
                    _number(w, raw, "loss", where, 0, 0.99, 0.0, i),
                    _number(w, raw, "queue_ms", where, 1, 10000, 50.0, i), trace)


def _event(w: _Where, raw: Any, i: int, names: set[str], duration: float) -> Event:
    where = f"event[{i}]"
    if not isinstance(raw, dict):
        raise w.error("event", "must be [[event]] tables")
    _unknown(w, raw, {"at_s", "link", "set"}, where, i)
    at = _number(w, raw, "at_s", where, 0, duration, occurrence=i)
    link = raw.get("link")
    if link not in names:
        raise w.error(f"{where}.link", f"no link named {link!r}", i)
    changes = raw.get("set")
    if not isinstance(changes, dict) or not changes:
        raise w.error(f"{where}.set", "must be a non-empty table like { up = false }", i)
    _unknown(w, changes, EVENT_SET_KEYS, f"{where}.set", i)
    if "up" in changes and not isinstance(changes["up"], bool):
        raise w.error(f"{where}.set.up", "must be true or false", i)
    for key in changes.keys() - {"up"}:
        hi = 0.99 if key == "loss" else 10000
        lo = 0.01 if key.endswith("mbit") else (1 if key == "queue_ms" else 0)
        _number(w, changes, key, f"{where}.set", lo, hi, occurrence=i)
    return Event(at, link, dict(changes))


def _workload(w: _Where, raw: Any) -> Workload:
    if not isinstance(raw, dict):
        raise w.error("workload", "must be a table")
    _unknown(w, raw, {"kind", "direction", "flows", "cc", "rate_mbit", "interval_ms"}, "workload")
    kind = raw.get("kind", "tcp")
    if kind not in KINDS:
        raise w.error("workload.kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    direction = raw.get("direction", "up")
    if direction not in DIRECTIONS:
        raise w.error("workload.direction", f"must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    flows = raw.get("flows", 1)
    if isinstance(flows, bool) or not isinstance(flows, int) or not 1 <= flows <= 64:
        raise w.error("workload.flows", "must be a whole number from 1 to 64")
    cc = raw.get("cc", "cubic")
    if not isinstance(cc, str) or not re.fullmatch(r"[a-z0-9_]{1,16}", cc):
        raise w.error("workload.cc", "must be a congestion control name like cubic or bbr")
    return Workload(kind, direction, int(flows), cc,
                    _number(w, raw, "rate_mbit", "workload", 0.01, 10000, 10.0),
                    _number(w, raw, "interval_ms", "workload", 1, 10000,
                            20.0 if kind in ("ping", "mixed") else 100.0))


def parse(text: str, path: Path) -> Scenario:
    w = _Where(path, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    _unknown(w, doc, {"name", "duration_s", "link", "event", "workload"}, "")
    name = doc.get("name", path.stem)
    if not isinstance(name, str):
        raise w.error("name", "must be a string")
    duration = _number(w, doc, "duration_s", "", 1, 3600)
    raw_links = doc.get("link")
    if not isinstance(raw_links, list) or not raw_links:
        raise w.error("link", "at least one [[link]] is needed")
    if len(raw_links) > 8:
        raise w.error("link", "at most 8 links")
    links = tuple(_link(w, raw, i, path.parent) for i, raw in enumerate(raw_links))
    names = [link.name for link in links]
    if len(set(names)) != len(names):
        raise w.error("link.name", "link names must differ")
    raw_events = doc.get("event", [])
    if not isinstance(raw_events, list):
        raise w.error("event", "must be [[event]] tables")
    events = tuple(sorted((_event(w, raw, i, set(names), duration) for i, raw in enumerate(raw_events)),
                          key=lambda e: e.at_s))
    return Scenario(name, duration, links, events, _workload(w, doc.get("workload", {})), str(path))


def read_trace(path: str | Path) -> list[int]:
    """A rate trace: bytes the link may carry in each millisecond, one line each (cycled)."""
    with open(path) as f:
        return [int(x.split()[0]) for x in f if x.strip() and not x.startswith("#")]


def trace_rate_bps(trace: list[int], ms: int) -> float:
    """The rate a trace gives in millisecond `ms` of the run (a floor of a byte per ms)."""
    return max(trace[ms % len(trace)] * 8000.0, 8000.0)


def _segments(sc: Scenario, link: LinkSpec) -> list[tuple[float, float, LinkSpec, bool]]:
    """The link's settings through the run: (from s, to s, spec, up), in order."""
    out = []
    spec, up, t = link, True, 0.0
    for event in [e for e in sc.events if e.link == link.name] + [Event(sc.duration_s, link.name, {})]:
        end = min(event.at_s, sc.duration_s)
        if end > t:
            out.append((t, end, spec, up))
            t = end
        up = event.changes.get("up", up)
        spec = spec.apply(event.changes)
    return out


def _mean_rate_bps(spec: LinkSpec, direction: str, t0: float, t1: float,
                   trace: list[int] | None) -> float:
    if trace is None:
        return spec.rate(direction) * 1e6
    ms = range(round(t0 * 1000), round(t1 * 1000))
    return sum(trace_rate_bps(trace, i) for i in ms) / max(1, len(ms))


def capacity_mbit(sc: Scenario, direction: str) -> dict[str, float]:
    """Each link's capacity in one direction over the run: its rate x (1 - loss), averaged
    over time through the scenario's events (nothing while it is down; a trace's rate ms by
    ms). The physical limit a run is scored against: a link congested to a quarter for a
    third of the run does not count at its full rate."""
    out = {}
    for link in sc.links:
        trace = read_trace(link.trace) if link.trace else None
        bits = sum(_mean_rate_bps(spec, direction, t0, t1, trace) * (t1 - t0) * (1 - spec.loss)
                   for t0, t1, spec, up in _segments(sc, link) if up)
        out[link.name] = bits / sc.duration_s / 1e6
    return out


def capacity_at(sc: Scenario, direction: str, t: float) -> dict[str, float]:
    """Each link's capacity in Mbit/s at `t` seconds into the run (a trace link: its mean
    over the run)."""
    out = {}
    for link in sc.links:
        trace = read_trace(link.trace) if link.trace else None
        rate = 0.0
        for t0, t1, spec, up in _segments(sc, link):
            if t0 <= t < t1 and up:
                span = (0.0, sc.duration_s) if trace is not None else (t0, t1)
                rate = _mean_rate_bps(spec, direction, *span, trace) * (1 - spec.loss) / 1e6
        out[link.name] = rate
    return out


def load(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    return parse(text, path)
