"""Receive-side reorder buffer, held per flow so one loss does not stall unrelated flows.

Each data packet carries (flow, flow_seq, seq). Packets of a flow are delivered in
flow_seq order. When a flow has a gap, the packets behind it are held until either:
  - the gap is known lost: every live link has carried a datagram sent after the first
    held packet (`lost(seq)`), and links keep their own order, so the missing ones
    can no longer arrive; or
  - its deadline passes (`timeout` after the gap was seen).
A packet that arrives after its gap was given up is delivered at once (late beats lost).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

FLOW_SEQ_MOD = 1 << 16


def fseq_diff(a: int, b: int) -> int:
    d = (a - b) & (FLOW_SEQ_MOD - 1)
    return d - FLOW_SEQ_MOD if d >= FLOW_SEQ_MOD // 2 else d


# bytes held behind gaps at most (what an authenticated peer can pin). The working limit
# follows what really arrives (`Receiver._resize`): twice the highest receive rate of the last
# 10 s times the longest a gap may hold a flow, between these two bounds
MAX_HELD_BYTES = 16 << 20
MIN_HELD_BYTES = 1 << 20
MAX_HELD_PACKETS = 8192
MIN_HELD_PACKETS = 1024


@dataclass(slots=True)
class _Flow:
    next_fseq: int
    held: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # fseq -> (seq, packet)
    gap_since: float = 0.0


class ReorderBuffer:
    def __init__(self, max_held: int = MAX_HELD_PACKETS, max_bytes: int = MAX_HELD_BYTES
                 ) -> None:
        self.max_held = max_held
        self.max_bytes = max_bytes
        self._flows: dict[int, _Flow] = {}
        self._gapped: set[int] = set()
        self.held = 0
        self.held_bytes = 0
        self.gaps_lost = 0  # gaps given up because every live link had sent past them
        self.gaps_timed_out = 0
        self.late = 0
        self.overflow = 0

    def push(self, flow: int, fseq: int, seq: int, packet: bytes, now: float) -> list[bytes]:
        """Add one packet; return the packets now deliverable in order."""
        st = self._flows.get(flow)
        if st is None:
            self._flows[flow] = _Flow((fseq + 1) % FLOW_SEQ_MOD)
            return [packet]
        d = fseq_diff(fseq, st.next_fseq)
        if d == 0:
            st.next_fseq = (fseq + 1) % FLOW_SEQ_MOD
            if not st.held:
                return [packet]
            out = [packet]
            self._drain(flow, st, out, now)
            return out
        if d < 0:
            self.late += 1
            return [packet]
        if d > FLOW_SEQ_MOD // 4:  # far ahead: the sender restarted its numbering
            self.held -= len(st.held)
            self.held_bytes -= sum(len(p) for _, p in st.held.values())
            st.held.clear()
            st.next_fseq = (fseq + 1) % FLOW_SEQ_MOD
            self._gapped.discard(flow)
            return [packet]
        if fseq not in st.held:
            if not st.held:
                st.gap_since = now
                self._gapped.add(flow)
            st.held[fseq] = (seq, packet)
            self.held += 1
            self.held_bytes += len(packet)
            if self.held > self.max_held or self.held_bytes > self.max_bytes:
                self.overflow += 1
                released: list[bytes] = []
                self._skip_gap(flow, st, released, now)
                return released
        return []

    def _drain(self, flow: int, st: _Flow, out: list[bytes], now: float) -> None:
        held = st.held
        nxt = st.next_fseq
        while nxt in held:
            packet = held.pop(nxt)[1]
            out.append(packet)
            self.held -= 1
            self.held_bytes -= len(packet)
            nxt = (nxt + 1) % FLOW_SEQ_MOD
        st.next_fseq = nxt
        if held:
            st.gap_since = now
        else:
            self._gapped.discard(flow)

    def _first_held(self, st: _Flow) -> int:
        return min(st.held, key=lambda f: fseq_diff(f, st.next_fseq))

    def _skip_gap(self, flow: int, st: _Flow, out: list[bytes], now: float) -> None:
        st.next_fseq = self._first_held(st)
        self._drain(flow, st, out, now)

    def release(self, now: float, lost: Callable[[int], bool], timeout: float) -> list[bytes]:
        """Give up on gaps that are known lost or past their deadline."""
        if not self._gapped:
            return []
        out: list[bytes] = []
        for flow in list(self._gapped):
            st = self._flows[flow]
            while st.held:
                first = self._first_held(st)
                if now >= st.gap_since + timeout:
                    self.gaps_timed_out += 1
                elif lost(st.held[first][0]):
                    self.gaps_lost += 1
                else:
                    break
                self._skip_gap(flow, st, out, now)
        return out

    def next_deadline(self, timeout: float) -> float | None:
        if not self._gapped:
            return None
        return min(self._flows[f].gap_since for f in self._gapped) + timeout
