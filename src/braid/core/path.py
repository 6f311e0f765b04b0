"""What the peer's receiver reports (wire.Feedback) say about one link's path, fed one
report at a time: the round trip (smoothed, its variation and a windowed minimum), the
one-way delay (the latest interval's minimum against its 10 s base: the standing queue),
the loss rate from packet numbers, and the peer's delivered byte count, credited only up
to what this end really sent. The rate estimator (core/estimator.py) takes the delivery
and queue figures from here; `Link` composes both.
"""

from __future__ import annotations

from typing import NamedTuple

from . import wire
from .replay import SEQ_MOD
from .windowed import WindowedMin

OWD_BASE_WINDOW = 10.0  # windowed min of one-way delay and of the round trip (seconds)
LOSS_SAMPLE = 200  # datagrams for a loss sample to replace the estimate in full
MAX_ECHO_AGE_US = 10_000_000  # an echoed timestamp older than this says nothing


class Delivery(NamedTuple):
    """One report's delivery figure: the peer's byte count (mod 2**32) as credited, its
    clock at the last counted arrival, and when the echoed datagram left this end."""

    rx_bytes: int
    rx_time_us: int
    sent_at: float | None


class PathStats:
    __slots__ = ("_fb_rx_last", "_loss_base", "_rx_credited", "_rx_reported", "loss", "min_rtt",
                 "owd_base", "owd_recent", "rttvar", "srtt")

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.min_rtt = WindowedMin(OWD_BASE_WINDOW)
        self.owd_base = WindowedMin(OWD_BASE_WINDOW)
        self.owd_recent: int | None = None  # the latest report's minimum one-way delay (us)
        self.loss = 0.0
        self._loss_base: tuple[int, int] | None = None  # (rx_packets, highest_counter)
        self._fb_rx_last: int | None = None  # rx_bytes of the last receiver report
        self._rx_credited = 0  # our sent bytes its reports have accounted for
        self._rx_reported = 0  # their byte count as the estimator sees it (capped increases)

    def __repr__(self) -> str:
        srtt = "-" if self.srtt is None else f"{self.srtt * 1000:.1f}ms"
        queue = self.queue_delay()
        q = "-" if queue is None else f"{queue * 1000:.1f}ms"
        return f"PathStats(srtt={srtt} rttvar={self.rttvar * 1000:.1f}ms queue={q} loss={self.loss:.4f})"

    def on_report(self, fb: wire.Feedback, now: float, now_us: int, sent_bytes: int,
                  overshoot: int = -1) -> Delivery:
        """A receiver report arrived at `now` (`now_us`: the same moment in this end's
        clock, which the echoed timestamp is in); `sent_bytes`: all this end has sent on
        the link so far; `overshoot`: the last packet number whose loss is the sender's
        own doing (a startup's overshoot), not the path's: not counted as loss."""
        age_us = (now_us - fb.echo_ts) & (SEQ_MOD - 1)
        rtt_us = age_us - fb.echo_hold_us
        if 0 < rtt_us < MAX_ECHO_AGE_US:
            self._on_rtt(now, rtt_us / 1e6)
        self.owd_recent = fb.owd_min_us
        self.owd_base.update(now, fb.owd_min_us)
        self._on_loss(fb.rx_packets, fb.highest_counter, overshoot)
        sent_at = now - age_us / 1e6 if age_us < MAX_ECHO_AGE_US else None
        return Delivery(self._credited(fb.rx_bytes, sent_bytes), fb.rx_time_us, sent_at)

    def queue_delay(self) -> float | None:
        """Standing queue on the path (recent min one-way delay above its 10 s minimum)."""
        if self.owd_recent is None:
            return None
        return max(0, self.owd_recent - self.owd_base.get(self.owd_recent)) / 1e6

    def one_way_delay(self) -> float:
        """Relative one-way delay used to compare links (unknown clock offset cancels out)."""
        if self.srtt is None:
            return 0.5
        return self.min_rtt.get(self.srtt) / 2

    def lowest_rtt(self) -> float | None:
        return None if self.srtt is None else self.min_rtt.get(self.srtt)

    def restart_numbers(self) -> None:
        """The peer's packet numbers and report counts start over."""
        self._loss_base = None

    def _on_rtt(self, now: float, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.min_rtt.update(now, rtt)

    def _on_loss(self, rx_packets: int, highest: int, overshoot: int) -> None:
        base = self._loss_base
        self._loss_base = (rx_packets, highest)
        if base is None or highest <= base[1] or base[1] < overshoot:
            return
        sent = highest - base[1]
        got = (rx_packets - base[0]) & (SEQ_MOD - 1)
        sample = max(0.0, min(1.0, 1 - got / sent))
        weight = min(1.0, sent / LOSS_SAMPLE)
        self.loss += (sample - self.loss) * weight

    def _credited(self, rx_bytes: int, sent_bytes: int) -> int:
        """The receiver's cumulative byte count (mod 2**32), each report's increase capped at
        what this end has sent on the link and not yet seen reported: a report can never
        raise the estimate past what was really sent (a forged one, or the counter of a
        peer that restarted, read 66 Gbit/s on a 20 Mbit/s link)."""
        last = self._fb_rx_last
        self._fb_rx_last = rx_bytes
        if last is None:  # the increments start here; what was sent before stays claimable
            # (it may still be in flight: crediting it at once read a satellite's in-flight
            # megabytes as lost), a one-time slack of what was really sent
            return self._rx_reported
        claimed = (rx_bytes - last) & (SEQ_MOD - 1)
        take = min(claimed, max(0, sent_bytes - self._rx_credited))
        self._rx_credited += take
        self._rx_reported = (self._rx_reported + take) & (SEQ_MOD - 1)
        return self._rx_reported
