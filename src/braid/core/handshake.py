"""Handshake messages: Noise IK payloads and the initiator's state machine."""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass

from .wire import WireError

PROLOGUE = b"braid/1"
LINK_NAME = re.compile(rb"[A-Za-z0-9_.-]{1,32}")  # as the client's config allows
MAX_LINKS = 32


@dataclass(frozen=True, slots=True)
class InitPayload:
    """Sealed inside message 1: freshness, the client's instance, its links' names."""

    wall_us: int  # strictly increasing per client: stops replay of old initiations
    instance: int  # random per client process: a change means the client restarted
    link_id: int  # the link this initiation was sent on
    link_names: tuple[str, ...]  # by link id; "" for an id not in use (a link removed live)

    def encode(self) -> bytes:
        out = struct.pack("!QIBB", self.wall_us, self.instance, self.link_id, len(self.link_names))
        for name in self.link_names:
            raw = name.encode()
            out += bytes((len(raw),)) + raw
        return out

    @classmethod
    def decode(cls, raw: bytes) -> InitPayload:
        if len(raw) < 14:
            raise WireError("initiation payload too short")
        wall, instance, link_id, count = struct.unpack_from("!QIBB", raw)
        if count == 0 or count > MAX_LINKS or link_id >= count:
            raise WireError("initiation payload has a bad link count")
        pos, names = 14, []
        for _ in range(count):
            if pos >= len(raw) or pos + 1 + raw[pos] > len(raw):
                raise WireError("initiation payload truncated")
            n = raw[pos]
            name = raw[pos + 1 : pos + 1 + n]
            if n and not LINK_NAME.fullmatch(name):  # it reaches logs and status: no control chars
                raise WireError("link name is not 1-32 letters, digits, _ . -")
            names.append(name.decode())
            pos += 1 + n
        if pos != len(raw):
            raise WireError("initiation payload has trailing bytes")
        if not names[link_id] or len(set(names) - {""}) != sum(1 for n in names if n):
            raise WireError("initiation payload names its own link \"\" or a link twice")
        return cls(wall, instance, link_id, tuple(names))


@dataclass(frozen=True, slots=True)
class RespPayload:
    instance: int  # the gateway's instance

    def encode(self) -> bytes:
        return struct.pack("!I", self.instance)

    @classmethod
    def decode(cls, raw: bytes) -> RespPayload:
        if len(raw) != 4:
            raise WireError("response payload has a bad length")
        return cls(struct.unpack("!I", raw)[0])


class HandshakeState(enum.Enum):
    """The initiator's handshake state. It is never stored: `handshake_state` derives it from
    what the client holds (transport keys, an initiation awaiting its response), so it cannot
    disagree with the keys, whatever order timers, expiry and late responses come in."""

    IDLE = "idle"  # no keys, no initiation outstanding
    SENT = "sent"  # an initiation awaits its response, no keys yet
    ESTABLISHED = "established"  # transport keys in use (a rekey may be under way)


def handshake_state(has_keys: bool, awaiting_response: bool) -> HandshakeState:
    """Total over its inputs: every pair has a state (tests/unit/test_handshake_state.py)."""
    if has_keys:
        return HandshakeState.ESTABLISHED
    return HandshakeState.SENT if awaiting_response else HandshakeState.IDLE
