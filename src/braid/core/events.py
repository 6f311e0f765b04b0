"""What the core tells its daemon: typed events, pulled one at a time (`next_event()` on
`ClientCore` and `GatewayCore`), each with the one log line it stands for (`str(event)`).

`peer` names the client at the gateway; at the client (one peer, the gateway) it is "".
"""

from __future__ import annotations

from dataclasses import dataclass

from .health import Health


def _who(peer: str) -> str:
    return f"{peer}: " if peer else ""


@dataclass(frozen=True, slots=True)
class LinkStateChanged:
    """A link's health changed in one direction: "rx" (what this end hears of it), "tx"
    (what the peer reports hearing of it) or "role" (a backup went to or left standby)."""
    link: str
    health: Health
    direction: str
    cause: str
    peer: str = ""

    def __str__(self) -> str:
        return f"{_who(self.peer)}link {self.link} {self.direction} {self.health.value}: {self.cause}"


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    peer: str = ""
    link: str = ""  # at the gateway: the link the initiation came on

    def __str__(self) -> str:
        return f"{self.peer}: handshake on link {self.link}" if self.peer else "handshake complete"


@dataclass(frozen=True, slots=True)
class PeerRestarted:
    """The peer came back with a new instance: its sequence numbers start over."""
    peer: str = ""

    def __str__(self) -> str:
        return f"{self.peer}: client restarted" if self.peer else "gateway restarted: receive state reset"


@dataclass(frozen=True, slots=True)
class HandshakesUnanswered:
    """The client's handshakes have had no answer on any link for `seconds`."""
    seconds: float

    def __str__(self) -> str:
        return (f"no answer to handshakes on any link for {self.seconds:.0f} s "
                "(is the gateway up, and its key, host and port right?)")


@dataclass(frozen=True, slots=True)
class PeerSilent:
    """No authenticated datagram from the gateway on any link for `seconds`: a new handshake."""
    seconds: float

    def __str__(self) -> str:
        return f"no answer from the gateway on any link for {self.seconds:.1f} s: handshaking again"


@dataclass(frozen=True, slots=True)
class HandshakeRefused:
    """The gateway refused handshakes of one kind; `untold` more since the last such event
    (at most one a kind per TELL_INTERVAL)."""
    reason: str
    untold: int = 0

    def __str__(self) -> str:
        return self.reason + (f" ({self.untold} more like it since the last)" if self.untold else "")


@dataclass(frozen=True, slots=True)
class KeyShared:
    """Two processes use one client's key at once."""
    peer: str
    address: str
    others: str

    def __str__(self) -> str:
        return f"{self.peer}: its key is used by two clients at once: {self.address} and {self.others}"


@dataclass(frozen=True, slots=True)
class LinksChanged:
    """A client announced another set of links (a reload)."""
    peer: str
    links: tuple[str, ...]
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __str__(self) -> str:
        return (f"{self.peer}: links now {', '.join(self.links)}"
                + (f"; added {', '.join(self.added)}" if self.added else "")
                + (f"; removed {', '.join(self.removed)}" if self.removed else ""))


Event = (LinkStateChanged | HandshakeCompleted | PeerRestarted | HandshakesUnanswered
         | PeerSilent | HandshakeRefused | KeyShared | LinksChanged)
