"""The core's typed events and the log lines they stand for."""

from braid.core.events import (
    HandshakeCompleted,
    HandshakeRefused,
    HandshakesUnanswered,
    KeyShared,
    LinksChanged,
    LinkStateChanged,
    PeerRestarted,
    PeerSilent,
)
from braid.core.health import Health


def test_each_event_is_one_readable_log_line():
    lines = {
        LinkStateChanged("lte", Health.DOWN, "rx", "nothing heard for 2000 ms"):
            "link lte rx down: nothing heard for 2000 ms",
        LinkStateChanged("lte", Health.SUSPECT, "tx", "the peer does not hear it", peer="site"):
            "site: link lte tx suspect: the peer does not hear it",
        HandshakeCompleted(): "handshake complete",
        HandshakeCompleted("site", "fibre"): "site: handshake on link fibre",
        PeerRestarted(): "gateway restarted: receive state reset",
        PeerRestarted("site"): "site: client restarted",
        HandshakesUnanswered(5.2): "no answer to handshakes on any link for 5 s (is the gateway "
                                   "up, and its key, host and port right?)",
        PeerSilent(1.04): "no answer from the gateway on any link for 1.0 s: handshaking again",
        HandshakeRefused("handshake from 192.0.2.1:4000 refused: unknown key", 3):
            "handshake from 192.0.2.1:4000 refused: unknown key (3 more like it since the last)",
        KeyShared("site", "192.0.2.1:4000", "192.0.2.2:4000"):
            "site: its key is used by two clients at once: 192.0.2.1:4000 and 192.0.2.2:4000",
        LinksChanged("site", ("a", "b"), ("b",), ()): "site: links now a, b; added b",
    }
    for event, line in lines.items():
        assert str(event) == line
        assert "\n" not in str(event)
