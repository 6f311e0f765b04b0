"""docs/protocol.md matches the code: every frame and datagram type, and every number it
quotes, against wire.py and the constants they come from. A change to one without the
other fails here."""

import re
from pathlib import Path

from braid.core import (
    cookie,
    gateway,
    receiver,
    recovery,
    reorder,
    replay,
    sources,
    timers,
    wire,
)

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
FLAT = " ".join(DOC.split())  # the prose however it is wrapped


def test_every_frame_type_is_documented_with_its_code():
    frames = {name[len("FRAME_"):]: value for name, value in vars(wire).items()
              if name.startswith("FRAME_") and isinstance(value, int)}
    documented = {m.group(1): int(m.group(2), 16) for m in re.finditer(r"^\| ([A-Z]+) (0x[0-9a-f]{2}) \|",
                                                                        DOC, re.M)}
    assert documented == frames


def test_every_datagram_type_is_documented_with_its_code():
    for name in ("HANDSHAKE_INIT", "HANDSHAKE_RESP", "COOKIE_REPLY"):
        assert re.search(rf"^{name}\s+type={getattr(wire, name)} ", DOC, re.M), name
    assert re.search(rf"^type={wire.TRANSPORT} \(1\) \| receiver_index", DOC, re.M)


def test_sizes_in_the_layouts_match_the_structs():
    assert wire.TRANSPORT_HEADER_LEN == 12 and "the 12-byte header" in DOC
    assert wire.COOKIE_REPLY_LEN == 61 and "COOKIE_REPLY (61 bytes" in DOC
    assert wire.MACS_LEN == 2 * cookie.MAC_LEN == 32 and "mac1 (16) | mac2 (16)" in DOC
    assert wire.HEARD.size == 13 and "HEARD 0x07 | known (4), up (4), standby (4)" in DOC
    assert wire.TOKEN.size == 1 + sources.TOKEN_LEN and "token (8)" in DOC


def test_every_number_quoted_is_the_codes():
    quoted = [
        (timers.REKEY_AFTER_TIME, "renewed after 120 s"),
        (timers.REJECT_AFTER_TIME, "refused\n  after 180 s"),
        (timers.KEEP_PREVIOUS, "previous keys still open datagrams for 10 s"),
        (replay.ReplayWindow().size, "replay window per link (4096 counters)"),
        (replay.SeqFilter().size, "seen twice within 8192"),
        (timers.SESSION_SILENCE, "on any link for 1 s (`SESSION_SILENCE`"),
        (timers.ANSWER_COPY_TIME, "copy arrives within 1 s"),
        (gateway.HANDSHAKE_LOAD, "more than 100 initiations"),
        (gateway.SOURCE_RATE, "per source address (20/s"),
        (gateway.SOURCE_BURST, "burst 10;"),
        (gateway.CLIENT_RATE, "per client key\n   (10/s, burst 20)"),
        (gateway.CLIENT_BURST, "(10/s, burst 20)"),
        (timers.COOKIE_SECRET_LIFE, "new every 120 s"),
        (timers.COOKIE_USE_LIFE, "for 110 s"),
        (sources.AMPLIFICATION_LIMIT, "at most 3 times the bytes"),
        (timers.CHALLENGE_RETRY, "unanswered for 0.5 s"),
        (sources.MAX_SOURCES, "At most 4 addresses are kept per link"),
        (timers.SOURCE_FRESH, "heard within 2 s of the newest"),
        (wire.NACK_MAX, "at most 32 NACKed counters"),
        (recovery.NACK_RATE, "at most 1000 NACKs a second"),
        (recovery.NACK_BURST, "(burst 200)"),
        (timers.REORDER_TIMEOUT_MAX, "twice the longest hold (1 s)"),
        (receiver.RATE_WINDOW, "receive rate of the last 10 s"),
        (receiver.RATE_SAMPLE, "sampled every 0.1 s"),
        (reorder.MIN_HELD_BYTES // (1 << 20), "within 1-16 MiB"),
        (reorder.MAX_HELD_BYTES // (1 << 20), "within 1-16 MiB"),
        (reorder.MIN_HELD_PACKETS, "1024-8192 packets"),
        (reorder.MAX_HELD_PACKETS, "1024-8192 packets"),
        (receiver.MAX_PARTIAL, "at most 512 partly received packets"),
        (timers.REORDER_TIMEOUT_MAX, "at most\n  1 s"),
        (timers.HEARD_INTERVAL * 1000, "at most every 50 ms per link"),
    ]
    for value, phrase in quoted:
        assert " ".join(phrase.split()) in FLAT, f"docs/protocol.md no longer says {phrase!r}"
        numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", phrase)]
        assert float(value) in numbers, f"{phrase!r} quotes {numbers}, the code has {value}"
