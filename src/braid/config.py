"""Loading and validating client and gateway TOML files.

Every problem raises ConfigError with one line naming the file, the line (where it can be
found), the key and the reason. Keys are the public contract: extend, never rename.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from braid.core.wire import DEFAULT_FRAGMENTS, MAX_FRAGMENTS

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
log = logging.getLogger("braid.config")

DEFAULT_PORT = 7000
DEFAULT_TABLE = 7077  # braid's routing table and fwmark (wg-quick uses 51820)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEDULER_NAMES = ("earliest-arrival", "round-robin")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class LinkSpec:
    name: str
    bind: str  # interface name or local address
    sockets: int
    mtu: int | None
    role: str = "primary"
    cap_mb: int | None = None  # bytes allowed per cap period (MB = 10^6), then a backup
    cap_reset_day: int = 1  # the day of the month a cap period starts


@dataclass(frozen=True)
class ClientConfig:
    private_key: bytes
    addresses: tuple[Interface, ...]
    gateway_public_key: bytes
    endpoints: tuple[tuple[str, int], ...]  # the gateway's; each link uses one it can reach
    links: tuple[LinkSpec, ...]
    tun: str
    control: str
    scheduler: str
    queue_ms: float
    fragments: int
    warmup: bool
    routes: tuple[Network, ...] = ()  # sent through the tunnel (full tunnel: 0.0.0.0/0, ::/0)
    table: int = DEFAULT_TABLE
    fwmark: int = DEFAULT_TABLE
    kill_switch: bool = False
    forwarding: bool = True  # may set the forwarding sysctls while it runs
    metrics: tuple[str, int] | None = None  # Prometheus endpoint (off by default)
    state_dir: str = "/var/lib/braid"  # kept across restarts: handshake timestamp, caps used


@dataclass(frozen=True)
class ClientSpec:
    name: str
    public_key: bytes
    addresses: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


@dataclass(frozen=True)
class GatewayConfig:
    private_key: bytes
    listen: tuple[str, int]
    addresses: tuple[Interface, ...]
    clients: tuple[ClientSpec, ...]
    tun: str
    control: str
    mtu: int
    scheduler: str
    queue_ms: float
    fragments: int
    warmup: bool
    client_to_client: bool = False
    nat: bool = False
    egress: str | None = None  # masquerade out of this interface (default: the default route's)
    forwarding: bool = True
    metrics: tuple[str, int] | None = None


_ARRAY_HEADER = re.compile(r"\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]")
_TABLE_HEADER = re.compile(r"\[\s*([A-Za-z0-9_.-]+)\s*\]")
_KEY_LINE = re.compile(r'([A-Za-z0-9_-]+|"[^"]*")\s*[=.]')


def line_index(text: str) -> dict[tuple[str, str], int]:
    """(table, key) -> line number, with tables named as the loaders name them ("" for the
    top level, "client", "link[1]"); key "" is the table's header line."""
    index: dict[tuple[str, str], int] = {}
    table, arrays = "", dict[str, int]()
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if m := _ARRAY_HEADER.match(stripped):
            i = arrays.get(m.group(1), 0)
            arrays[m.group(1)] = i + 1
            table = f"{m.group(1)}[{i}]"
            index[(table, "")] = number
        elif m := _TABLE_HEADER.match(stripped):
            table = m.group(1)
            index[(table, "")] = number
        elif m := _KEY_LINE.match(stripped):
            index.setdefault((table, m.group(1).strip('"')), number)
    return index


class _Reader:
    """Walks one parsed TOML table, remembering which keys were used."""

    def __init__(self, path: Path, text: str, table: dict[str, Any], where: str) -> None:
        self.path, self.text, self.table, self.where = path, text, table, where
        self.used: set[str] = set()
        self._lines = line_index(text)

    def _line(self, key: str) -> str:
        lines = self._lines
        number = lines.get((self.where, key))
        if number is None and not self.where:  # a top-level key may be a table's header
            number = lines.get((key, "")) or lines.get((f"{key}[0]", ""))
        number = number or lines.get((self.where, ""))
        return f":{number}" if number else ""

    def error(self, key: str, reason: str) -> ConfigError:
        full = f"{self.where}.{key}" if self.where else key
        return ConfigError(f"{self.path}{self._line(key)}: {full}: {reason}")

    def _missing(self, key: str) -> ConfigError:
        typo = difflib.get_close_matches(key, [k for k in self.table if k not in self.used], n=1,
                                         cutoff=0.6)
        if typo:  # the key is there, misspelt: name the typo, where it is
            where = self.where or "top level"
            return ConfigError(f"{self.path}{self._line(typo[0])}: {where}: unknown key '{typo[0]}' "
                               f"(did you mean '{key}'?)")
        if not self.where:
            return ConfigError(f"{self.path}: missing [{key}] (or [[{key}]]) table")
        return ConfigError(f"{self.path}{self._line('')}: {self.where}: missing key '{key}'")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., ) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise self._missing(key)
            return default
        value = self.table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.error(key, f"must be {names}, got {type(value).__name__}")
        return value

    def finish(self) -> None:
        """Call after every get: a key never asked for is a typo or does not belong here."""
        for key in self.table:
            if key not in self.used:
                close = difflib.get_close_matches(key, sorted(self.used), n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                where = self.where or "top level"
                raise ConfigError(f"{self.path}{self._line(key)}: {where}: unknown key '{key}'{hint}")


def _load(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def decode_key(value: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError(f"must decode to 32 bytes, got {len(raw)}")
    return raw


def _key(r: _Reader, key: str) -> bytes:
    value = r.get(key, str)
    try:
        return decode_key(value)
    except ValueError as exc:
        raise r.error(key, str(exc)) from None


def _private_key(r: _Reader) -> bytes:
    if "private_key" in r.table and "private_key_file" in r.table:
        raise r.error("private_key", "give private_key or private_key_file, not both")
    if "private_key_file" in r.table:
        file = Path(r.get("private_key_file", str))
        if not file.is_absolute():
            file = r.path.parent / file
        try:
            mode = file.stat().st_mode
            if mode & 0o077:
                log.warning("%s: private key file is readable by group or others (mode %04o): "
                            "chmod 600 %s", file, mode & 0o777, file)
            return decode_key(file.read_text())
        except OSError as exc:
            raise r.error("private_key_file", f"cannot read {file}: {exc.strerror}") from None
        except ValueError as exc:
            raise r.error("private_key_file", f"{file}: {exc}") from None
    return _key(r, "private_key")


def _addresses(r: _Reader, key: str) -> list[str]:
    value = r.get(key, (str, list))
    items = [value] if isinstance(value, str) else value
    if not items or not all(isinstance(v, str) for v in items):
        raise r.error(key, "must be an address/prefix or a non-empty list of them")
    return items


def _interfaces(r: _Reader, key: str) -> tuple[Interface, ...]:
    out = []
    for item in _addresses(r, key):
        try:
            out.append(ipaddress.ip_interface(item))
        except ValueError:
            raise r.error(key, f"{item!r} is not an address with prefix (like 10.77.0.2/24)") from None
    return tuple(out)


def _networks(r: _Reader, key: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for item in _addresses(r, key):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise r.error(key, f"{item!r} is not an address or prefix") from None
    return tuple(out)


def parse_hostport(value: str, default_port: int | None = None) -> tuple[str, int]:
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", value.strip())
    if not m:
        raise ValueError("must be host:port, or [v6]:port")
    host = m.group(1) or m.group(3)
    port_s = m.group(2) or m.group(4)
    if port_s is None:
        if default_port is None:
            raise ValueError("has no port")
        port = default_port
    else:
        port = int(port_s)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return host, port


def _hostport(r: _Reader, key: str) -> tuple[str, int]:
    value = r.get(key, str)
    try:
        return parse_hostport(value, DEFAULT_PORT)
    except ValueError as exc:
        raise r.error(key, str(exc)) from None


MAX_ENDPOINTS = 8


def _endpoints(r: _Reader) -> tuple[tuple[str, int], ...]:
    """`endpoint = "host:port"` or `endpoints = ["host:port", ...]` (not both)."""
    if "endpoints" not in r.table:
        return (_hostport(r, "endpoint"),)
    if "endpoint" in r.table:
        raise r.error("endpoints", "give endpoint or endpoints, not both")
    items = r.get("endpoints", list)
    if not items or len(items) > MAX_ENDPOINTS or not all(isinstance(v, str) for v in items):
        raise r.error("endpoints", f"must be a list of 1-{MAX_ENDPOINTS} \"host:port\" strings")
    out = []
    for item in items:
        try:
            out.append(parse_hostport(item, DEFAULT_PORT))
        except ValueError as exc:
            raise r.error("endpoints", f"{item!r} {exc}") from None
    if len(set(out)) < len(out):
        raise r.error("endpoints", "lists an endpoint twice")
    return tuple(out)


def _common(r: _Reader, role: str) -> dict[str, Any]:
    scheduler = r.get("scheduler", str, "earliest-arrival")
    if scheduler not in SCHEDULER_NAMES:
        raise r.error("scheduler", f"unknown scheduler {scheduler!r} (known: {', '.join(SCHEDULER_NAMES)})")
    queue_ms = r.get("queue_ms", (int, float), 50)
    if not 1 <= queue_ms <= 2000:
        raise r.error("queue_ms", "must be between 1 and 2000")
    tun = r.get("tun", str, f"braid-{role[:2]}0")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", tun):
        raise r.error("tun", "must be an interface name of 1-15 letters, digits, _ . -")
    control = r.get("control", str, f"/run/braid/{role}.sock")
    metrics = r.get("metrics", str, None)
    if metrics is not None:
        try:
            metrics_at: tuple[str, int] | None = parse_hostport(metrics)
        except ValueError as exc:
            raise r.error("metrics", f"{exc} (like 127.0.0.1:9477)") from None
    else:
        metrics_at = None
    fragments = r.get("fragments", int, DEFAULT_FRAGMENTS)
    if not 1 <= fragments <= MAX_FRAGMENTS:
        raise r.error("fragments", f"must be between 1 and {MAX_FRAGMENTS}")
    warmup = r.get("warmup", bool, True)
    return {"scheduler": scheduler, "queue_ms": float(queue_ms), "tun": tun, "control": control,
            "fragments": fragments, "warmup": warmup, "metrics": metrics_at}


def _table(r: _Reader, key: str) -> dict[str, Any]:
    value = r.get(key, dict)
    return value


def load_client(path: str | Path) -> ClientConfig:
    path = Path(path)
    text, doc = _load(path)
    top = _Reader(path, text, doc, "")
    c = _Reader(path, text, _table(top, "client"), "client")
    g = _Reader(path, text, _table(top, "gateway"), "gateway")
    raw_links = top.get("link", list)
    top.finish()
    if not raw_links:
        raise top.error("link", "at least one [[link]] is needed")
    links: list[LinkSpec] = []
    for i, item in enumerate(raw_links):
        if not isinstance(item, dict):
            raise top.error("link", "must be [[link]] tables")
        lr = _Reader(path, text, item, f"link[{i}]")
        name = lr.get("name", str)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", name):
            raise lr.error("name", "must be 1-32 letters, digits, _ . -")
        if any(link.name == name for link in links):
            raise lr.error("name", f"duplicate link name {name!r}")
        bind = lr.get("bind", str)
        sockets = lr.get("sockets", int, 1)
        if not 1 <= sockets <= 16:
            raise lr.error("sockets", "must be between 1 and 16")
        mtu = lr.get("mtu", int, None)
        if mtu is not None and not 1280 <= mtu <= 65535:
            raise lr.error("mtu", "must be between 1280 and 65535")
        role = lr.get("role", str, "primary")
        if role not in ("primary", "backup"):
            raise lr.error("role", f"must be \"primary\" or \"backup\", got {role!r}")
        cap_mb = lr.get("cap_mb", int, None)
        if cap_mb is not None and not 1 <= cap_mb <= 10**9:
            raise lr.error("cap_mb", "must be a number of MB from 1 to 10^9")
        reset_day = lr.get("cap_reset_day", int, 1)
        if not 1 <= reset_day <= 28:
            raise lr.error("cap_reset_day", "must be a day of the month from 1 to 28")
        lr.finish()
        links.append(LinkSpec(name, bind, sockets, mtu, role, cap_mb, reset_day))
    if len(links) > 32:
        raise top.error("link", "at most 32 links")
    common = _common(c, "client")
    routes = _networks(c, "routes") if "routes" in c.table else ()
    c.used.add("routes")
    table = c.get("table", int, DEFAULT_TABLE)
    if not 1 <= table < 2**31 or table in (253, 254, 255):
        raise c.error("table", "must be a routing table number from 1 to 2^31-1, not 253-255")
    fwmark = c.get("fwmark", int, table)
    if not 1 <= fwmark < 2**32:
        raise c.error("fwmark", "must be from 1 to 2^32-1")
    cfg = ClientConfig(
        private_key=_private_key(c), addresses=_interfaces(c, "address"),
        gateway_public_key=_key(g, "public_key"), endpoints=_endpoints(g),
        links=tuple(links), routes=routes, table=table, fwmark=fwmark,
        kill_switch=c.get("kill_switch", bool, False), forwarding=c.get("forwarding", bool, True),
        state_dir=c.get("state_dir", str, "/var/lib/braid"), **common)
    c.finish()
    g.finish()
    return cfg


def load_gateway(path: str | Path) -> GatewayConfig:
    path = Path(path)
    text, doc = _load(path)
    top = _Reader(path, text, doc, "")
    gw = _Reader(path, text, _table(top, "gateway"), "gateway")
    raw_clients = top.get("client", list)
    top.finish()
    clients: list[ClientSpec] = []
    for i, item in enumerate(raw_clients):
        if not isinstance(item, dict):
            raise top.error("client", "must be [[client]] tables")
        cr = _Reader(path, text, item, f"client[{i}]")
        name = cr.get("name", str)
        if any(c.name == name for c in clients):
            raise cr.error("name", f"duplicate client name {name!r}")
        spec = ClientSpec(name, _key(cr, "public_key"), _networks(cr, "address"))
        if any(c.public_key == spec.public_key for c in clients):
            raise cr.error("public_key", "the same key is given to two clients")
        for other in clients:  # each inner address belongs to one client: isolation rests on it
            for net in spec.addresses:
                clash = next((o for o in other.addresses
                              if o.version == net.version and net.overlaps(o)), None)
                if clash is not None:
                    raise cr.error("address", f"{net} of client {name!r} overlaps {clash} of client "
                                   f"{other.name!r}")
        cr.finish()
        clients.append(spec)
    mtu = gw.get("mtu", int, 1500)
    if not 1280 <= mtu <= 65535:
        raise gw.error("mtu", "must be between 1280 and 65535")
    common = _common(gw, "gateway")
    client_to_client = gw.get("client_to_client", bool, False)
    egress = gw.get("egress", str, None)
    if egress is not None and not re.fullmatch(r"[A-Za-z0-9_.@-]{1,15}", egress):
        raise gw.error("egress", "must be an interface name")
    cfg = GatewayConfig(private_key=_private_key(gw), listen=_hostport(gw, "listen"),
                        addresses=_interfaces(gw, "address"), clients=tuple(clients), mtu=mtu,
                        client_to_client=client_to_client, nat=gw.get("nat", bool, False),
                        egress=egress, forwarding=gw.get("forwarding", bool, True), **common)
    gw.finish()
    return cfg
