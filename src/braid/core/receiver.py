"""The receive side of the data: duplicate filter, reassembly of fragments, the per-flow
reorder buffer and its release. Data frames come in; whole inner packets, each flow in
order, go to `delivered`. It knows nothing of links: when a gap may be given up on is the
caller's to say (`lost`, `timeout`), from what the links report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import wire
from .reorder import (
    MAX_HELD_BYTES,
    MAX_HELD_PACKETS,
    MIN_HELD_BYTES,
    MIN_HELD_PACKETS,
    ReorderBuffer,
)
from .replay import SEQ_MOD, SeqFilter
from .timers import FRAGMENT_TIMEOUT
from .windowed import WindowedMax

MAX_PARTIAL = 512  # partly received packets kept at most (memory an authenticated peer can pin)
RATE_SAMPLE = 0.1  # seconds: the receive rate that sizes the reorder buffer is sampled this often
RATE_WINDOW = 10.0  # seconds: the buffer follows the highest rate sampled this long


@dataclass(slots=True)
class _Partial:
    """The fragments of one inner packet received so far."""
    started: float
    flow: int
    fseq: int
    count: int = 0  # known once the last fragment is in
    pieces: dict[int, bytes] = field(default_factory=dict)


class Receiver:
    def __init__(self, stats: dict[str, int], hold_max: float) -> None:
        """`stats`: the bond's counters (duplicates, reassembled, fragments_expired,
        bad_frames, tun_out), updated here. `hold_max`: the longest a gap may hold a flow
        (seconds); with the receive rate it sizes the reorder buffer."""
        self.stats = stats
        self.hold_max = hold_max
        self.delivered: list[bytes] = []
        self.reorder = ReorderBuffer(MIN_HELD_PACKETS, MIN_HELD_BYTES)
        self._rx_bytes = 0  # data bytes received since the current rate sample began
        self._sample_start: float | None = None
        self._peak_rate = WindowedMax(RATE_WINDOW)  # bytes/s
        self._seen = SeqFilter()
        self._partial: dict[int, _Partial] = {}  # first fragment's seq -> what arrived

    def on_data(self, frame: wire.Data, now: float) -> None:
        if not self._seen.first_time(frame.seq):
            self.stats["duplicates"] += 1
            return
        packet, seq = frame.packet, frame.seq
        self._rx_bytes += len(packet)
        tag = wire.fragment_tag(packet)
        if tag is not None:
            whole = self._reassemble(frame, tag, now)
            if whole is None:
                return
            packet, seq = whole
        self._deliver(self.reorder.push(frame.flow, frame.flow_seq, seq, packet, now))

    def release(self, now: float, lost: Callable[[int], bool], timeout: float) -> None:
        """Deliver what no gap holds any more: a gap ends when `lost(seq)` says no link
        can still bring it, or after `timeout`."""
        if self.reorder.held:
            self._deliver(self.reorder.release(now, lost, timeout))

    def next_deadline(self, timeout: float) -> float | None:
        return self.reorder.next_deadline(timeout) if self.reorder.held else None

    def on_timer(self, now: float) -> None:
        """Size the reorder buffer from what arrives; drop overdue fragments."""
        self._resize(now)
        self._expire(now)

    def _resize(self, now: float) -> None:
        """The reorder buffer may hold what arrives while a gap holds a flow at the longest,
        twice over: at 2 x (highest receive rate of the last RATE_WINDOW) x `hold_max`,
        between MIN_HELD_BYTES and MAX_HELD_BYTES. The rate is what really arrived here, so
        a peer can raise the limit only by sending that much, whatever its reports claim."""
        start = self._sample_start
        if start is None:
            self._sample_start = now
            return
        if now - start < RATE_SAMPLE:
            return
        self._peak_rate.update(now, self._rx_bytes / (now - start))
        self._rx_bytes, self._sample_start = 0, now
        limit = int(2 * self._peak_rate.get(0.0) * self.hold_max)
        limit = min(MAX_HELD_BYTES, max(MIN_HELD_BYTES, limit))
        self.reorder.max_bytes = limit
        self.reorder.max_held = min(MAX_HELD_PACKETS, max(MIN_HELD_PACKETS, limit >> 10))

    def _expire(self, now: float) -> None:
        """Drop partly received packets whose other fragments are overdue."""
        partial = self._partial
        while partial:
            base, part = next(iter(partial.items()))
            if now - part.started < FRAGMENT_TIMEOUT:
                return
            del partial[base]
            self.stats["fragments_expired"] += 1

    def reset(self) -> None:
        """The peer restarted: its sequence numbers start over."""
        old = self.reorder
        self.reorder = ReorderBuffer(old.max_held, old.max_bytes)
        self._seen = SeqFilter()
        self._partial.clear()

    def _deliver(self, packets: list[bytes]) -> None:
        if packets:
            self.delivered.extend(packets)
            self.stats["tun_out"] += len(packets)

    def _reassemble(self, frame: wire.Data, tag: tuple[int, bool], now: float
                    ) -> tuple[bytes, int] | None:
        """Add a fragment; the whole packet and its first fragment's seq once all are in."""
        index, last = tag
        base = (frame.seq - index) & (SEQ_MOD - 1)
        part = self._partial.get(base)
        if part is None:
            if len(self._partial) >= MAX_PARTIAL:
                del self._partial[next(iter(self._partial))]
                self.stats["fragments_expired"] += 1
            part = self._partial[base] = _Partial(now, frame.flow, frame.flow_seq)
        elif (part.flow, part.fseq) != (frame.flow, frame.flow_seq) or (
                part.count and (last or index >= part.count)):
            del self._partial[base]  # fragments that do not belong together
            self.stats["bad_frames"] += 1
            return None
        part.pieces[index] = frame.packet[1:]
        if last:
            part.count = index + 1
        if not part.count or len(part.pieces) < part.count:
            return None
        del self._partial[base]
        pieces = part.pieces
        if any(i not in pieces for i in range(part.count)):
            self.stats["bad_frames"] += 1
            return None
        self.stats["reassembled"] += 1
        return b"".join(pieces[i] for i in range(part.count)), base
