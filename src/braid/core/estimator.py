"""Per-link capacity estimation and pacing, from the receiver's feedback (BBR-like).

- Capacity: windowed max of the delivery rate the receiver reports. Samples count while
  the link is driven (the tunnel has kept packets waiting for it for longer than a sample
  lags, so what gets through measures the link); a higher sample always counts. So an
  idle or lightly used link keeps what it once proved, and a link whose capacity fell
  forgets the old figure within the window once it is driven again.
- Startup: pace at three times the estimate until a standing queue shows (the pipe is full).
  A driven link that shows no queue through a whole probe cycle, or whose probe was
  delivered nearly in full (a sign jitter cannot hide), has headroom: startup again, at
  twice its proven estimate (a reserved link, paced under its capacity, must show no queue
  even from its probe). A probe phase lasts at least one delivery sample's span.
- Then a gain cycle, one phase per round trip: 1.25 (probe for more), 0.75 (drain what
  the probe queued), 1 x 6 (0.9 while the path shows more than its usual standing
  queue). A link reserved for interactive traffic cruises just under its estimate and
  drains whenever more than about one datagram stands in its queue, so an interactive
  packet waits behind at most one bulk datagram (the bond sends short ones on a slow
  reserved link: a full one takes 12 ms at 1 Mbit/s); its probes are gentle (a 1.25 probe
  would queue a quarter of a phase, 20 ms, in front of every ping), and since its pacing
  is held below capacity on purpose, its delivery samples only ever raise the estimate.
  Its startup (at 1.25x; 1.5x the first time, from a guess) ends once a queue of about a
  datagram shows; it starts up again only if not even its probe queued half of one.
- One-way delay is a brake only: a standing queue well above the link's own delay noise
  (learned from probes while no data flows, so jitter of 4G or LEO satellite is not read
  as congestion) paces below the estimate, and resets it to what gets through if the
  datagrams sent since still arrive more slowly than they left, by more than the link's
  jitter can stretch them (a path whose delay merely stepped up, as a LEO satellite's at a
  handover, delivers them as fast: no cut).
Times are monotonic seconds passed in; no clock or randomness of its own.
"""

from __future__ import annotations

import bisect
from collections import deque
from enum import Enum

from .replay import SEQ_MOD
from .windowed import WindowedMax

FULL_PACKET_BITS = 12_000  # one full-size datagram
MIN_RATE = 64_000.0  # bit/s: the floor of every estimate, so a link can always be probed
INITIAL_RATE = 1_000_000.0
BW_WINDOW = 2.0  # seconds of driven samples the capacity is the max of
SAMPLE_SPAN = 0.040  # shortest span of receiver time a delivery-rate sample covers
SAMPLE_REPORTS = 8  # a delivery-rate sample spans at most this many receiver reports
SAMPLE_PACKETS = 20  # ... and at least this many full packets' worth of time
SAMPLE_SPAN_MAX = 0.120
# gains and cycles: how each value was chosen is in docs/tuning.md
STARTUP_GAIN = 3.0  # the first startup multiplies the estimate by this each delivery sample
RESTARTUP_GAIN = 2.0  # startup again, from an estimate the link has proven: a gentler overshoot
RESERVED_STARTUP_GAIN = 1.25  # its overshoot, until the queue shows, is what pings wait behind
RESERVED_FIRST_STARTUP_GAIN = 1.5  # ... except in its first startup, from a guess
CYCLE = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
PROBE_HEADROOM = 1.15  # a cycle's best delivery sample this far above the estimate: more to find
# a reserved link cruises just under its estimate: 1 % covers the max filter reading high
RESERVED_CYCLE = (1.05, 0.9, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99)
# bulk datagrams on a reserved link take at most about this long to send (shorter ones on
# a slow link), so the one an interactive packet waits behind is short
RESERVED_DATAGRAM_TIME = 0.004
RESERVED_DATAGRAM_MIN_BITS = 324 * 8  # the shortest (bond.MIN_DATA_ROOM + 68 bytes), on a very slow link
RESERVED_DRAIN = 0.85  # a reserved link with more than about a datagram queued
MIN_PHASE = 0.080
BRAKE_GAIN = 0.75
BRAKE_FLOOR = 0.030  # seconds of standing queue below which the brake never acts
CRUISE_DRAIN = 0.9
# the brake cuts the estimate only if what was sent since the queue showed arrives at least
# this much more slowly than it left, over at least BRAKE_SPAN of receiver time
BRAKE_EXCESS = 1.1
BRAKE_SPAN = 0.060
# ... after crediting their receive span with this many times the link's delay noise: the
# first and the last of them can each be late by up to the path's jitter
BRAKE_JITTER_CREDIT = 2.0
OVERDRIVE_SPAN = 0.2  # seconds of send and delivery history compared
OVERDRIVE_RATIO = 1.2  # sent / delivered above this: saturated (random loss stays well below)
OVERDRIVE_MIN_BYTES = 30_000  # about 20 full packets: less is not worth judging
TX_STEP = 0.002  # resolution of the sent-bytes history the overdrive check reads
TX_HISTORY = 2048  # entries kept (at least about 4 s at TX_STEP)
DENSE_REPORTS = 0.025  # seconds between receiver reports while a link is busy
NOISE_WEIGHT = 1 / 16


class Mode(Enum):
    """What the estimator is doing; `_to` is the one place it changes."""
    FIRST_STARTUP = "first startup"  # from a guess: pace at STARTUP_GAIN until a queue shows
    STARTUP = "startup"  # again, from a proven estimate: RESTARTUP_GAIN until a queue shows
    CYCLE = "cycle"  # the gain cycle (probe, drain, cruise) at the proven estimate


# (mode, event) -> next mode. Events: "full" (a standing queue ended startup, or a cut or the
# brake judged the estimate), "headroom" (a probe cycle found more, or the bond asks for a
# new startup). A pair not listed leaves the mode as it is.
TRANSITIONS = {
    (Mode.FIRST_STARTUP, "full"): Mode.CYCLE,
    (Mode.STARTUP, "full"): Mode.CYCLE,
    (Mode.CYCLE, "headroom"): Mode.STARTUP,
}


def _rx_span(t1_us: int, t0_us: int) -> float:
    """Seconds between two receiver report times (a wrapping 32-bit microsecond clock)."""
    return ((t1_us - t0_us) & (SEQ_MOD - 1)) / 1e6


def _bits(b1: int, b0: int) -> int:
    """Bits between two cumulative (wrapping) receiver byte counts."""
    return ((b1 - b0) & (SEQ_MOD - 1)) * 8


class RateEstimator:
    def __init__(self, now: float, initial_rate: float = INITIAL_RATE) -> None:
        self.initial_rate = initial_rate
        self._bw = WindowedMax(BW_WINDOW)
        self._hist: deque[tuple[int, int]] = deque(maxlen=32)  # (rx_time_us, rx_bytes)
        # when we sent the latest datagram each report had received (None: not known)
        self._hist_sent: deque[float | None] = deque(maxlen=32)
        self._tx_times: list[float] = []  # our cumulative sent bytes, sampled every TX_STEP
        self._tx_counts: list[int] = []
        self._overdrive_from = -1.0  # a cut judges only what was sent after the last one
        self.overdriven = 0  # estimate cuts: sent far above what arrived
        self.braked = 0  # estimate cuts: a standing queue far above the link's own
        self._overdrive_streak = 0
        self._overdrive_first_end = -1.0  # send time ending the span of the first sign
        self.recent_rate = 0.0
        self._set_mode(Mode.FIRST_STARTUP)  # mode, startup, proven
        self._cycle_max_queue = 0.0
        self._cycle_max_rate = 0.0  # delivery samples in this probe cycle
        self._cycle_capacity = initial_rate  # the estimate as the cycle began
        self._phase = 0
        self._phase_start = now
        self.reserved = False
        self.backlogged_since: float | None = None  # the tunnel's queue for the link is non-empty
        self.srtt = MIN_PHASE
        self.queue: float | None = None  # seconds of standing queue, from one-way delays
        self._brake_since: float | None = None
        self.delay_noise = 0.0  # seconds of one-way delay variation while not driven
        self._noise_samples = 0

    # ---------------------------------------------------------------- inputs

    def driven(self, now: float) -> bool:
        since = self.backlogged_since
        return since is not None and now - since > self.srtt + SAMPLE_SPAN

    def on_sent(self, now: float, tx_bytes: int) -> None:
        """We have sent `tx_bytes` on the link so far (kept at TX_STEP resolution)."""
        times, counts = self._tx_times, self._tx_counts
        if len(times) >= 2 and now - times[-2] < TX_STEP:
            times[-1], counts[-1] = now, tx_bytes
            return
        times.append(now)
        counts.append(tx_bytes)
        if len(times) > 2 * TX_HISTORY:
            del times[:TX_HISTORY], counts[:TX_HISTORY]

    def _sent_by(self, when: float) -> int | None:
        """Our cumulative sent bytes at time `when` (None: before the history)."""
        i = bisect.bisect_right(self._tx_times, when) - 1
        return self._tx_counts[i] if i >= 0 else None

    def on_delivery(self, now: float, rx_time_us: int, rx_bytes: int,
                    sent_at: float | None = None) -> None:
        """Cumulative bytes the receiver got by its time rx_time_us; `sent_at`: when we sent
        the latest datagram it had then received (the report's echo)."""
        hist = self._hist
        hist.append((rx_time_us, rx_bytes))
        self._hist_sent.append(sent_at)
        self._check_overdriven(now)
        if not self.startup:
            self._note_probe_sample(rx_time_us, rx_bytes)
        # at least SAMPLE_PACKETS packets' worth: on a slow link a short sample holds a handful
        # of packets, and the max filter would keep the ones that happened to read high
        # (capped well inside what SAMPLE_REPORTS reports span: a low estimate must still be
        # able to take the sample that raises it)
        shortest = self._sample_span()
        # the longest span of the last few reports; in startup, where the rate doubles every
        # few reports and a long average lags it, the shortest span long enough
        indices = range(max(0, len(hist) - SAMPLE_REPORTS), len(hist))
        if self.startup:
            indices = indices[::-1][1:]
        for i in indices:
            t0, b0 = hist[i]
            span = _rx_span(rx_time_us, t0)
            if span < shortest:
                if self.startup:
                    continue
                return
            if span <= 1.0:
                # the longer of the receive and the send span of those bytes (BBR's rule): a
                # link cannot deliver faster than they were sent, however compressed their
                # arrivals (jitter) or whatever span a forged report claims
                s0, s1 = self._hist_sent[i], self._hist_sent[-1]
                if s0 is not None and s1 is not None and span < s1 - s0 <= 1.0:
                    span = s1 - s0
                self.recent_rate = _bits(rx_bytes, b0) / span
                break
        else:
            return
        # a reserved link is paced under its capacity on purpose: what it delivers then
        # measures our pacing, not the link
        if (self.driven(now) and not self.reserved) or self.recent_rate > self.capacity():
            self._bw.update(now, self.recent_rate)

    def _note_probe_sample(self, rx_time_us: int, rx_bytes: int) -> None:
        """The delivery rate over the last phase's worth of receiver time: once per cycle
        it covers what the probe sent (the capacity sample, over up to SAMPLE_REPORTS
        reports, averages the probe with the drain after it)."""
        length = self._phase_length()
        for t0, b0 in reversed(self._hist):
            span = _rx_span(rx_time_us, t0)
            if span >= length:
                if span <= 2 * length:
                    rate = _bits(rx_bytes, b0) / span
                    self._cycle_max_rate = max(self._cycle_max_rate, rate)
                return

    def _phase_length(self) -> float:
        """A phase lasts a round trip, and at least a delivery sample's span, or no sample
        could show a probe."""
        return max(MIN_PHASE, self.srtt, self._sample_span())

    def _sample_span(self) -> float:
        """The shortest receiver time a delivery sample may span (in startup, packets come
        at the pacing rate, a multiple of the estimate)."""
        rate = self.capacity() * (self._startup_gain() if self.startup else 1.0)
        return min(SAMPLE_SPAN_MAX, max(SAMPLE_SPAN, SAMPLE_PACKETS * FULL_PACKET_BITS / rate))

    def _check_overdriven(self, now: float) -> None:
        """Sending well above what arrives, over a few hundred ms, while the receiver gets less
        than the estimate: the link is saturated and its capacity is what gets through. This
        needs no delay signal, so it also works where the queue is hidden in jitter. The
        bytes sent are those of the very datagrams the two reports span (by their echoed
        send times): comparing windows one round trip apart misread a satellite's bursts,
        600 ms away behind a 300 ms queue, as a link at half its rate, and cut it."""
        hist, sent_at = self._hist, self._hist_sent
        t1, s1 = hist[-1][0], sent_at[-1]
        if s1 is None:
            return
        first = None
        for k in range(len(hist) - 2, -1, -1):
            if _rx_span(t1, hist[k][0]) >= OVERDRIVE_SPAN:
                first = k
                break
        if first is None:
            return
        s0 = sent_at[first]
        if s0 is None or s0 < self._overdrive_from:
            return
        span = self._span(first)
        if span is None:
            return
        delivered, sent, sent_bytes, rx_span = span
        if sent_bytes < OVERDRIVE_MIN_BYTES:
            return
        reports = len(hist) - 1 - first
        if reports < rx_span / DENSE_REPORTS:
            return  # reports were sparse: the link idled in the window, nothing to judge
        if not (sent > OVERDRIVE_RATIO * delivered and delivered < self.capacity()):
            self._overdrive_streak = 0
            return
        # twice in a row, over two spans of datagrams that do not overlap, and at most
        # halving: a receiver that stalled (a busy host) or a path whose delay stepped up (a
        # LEO handover) reads like a saturated link for one span, and must not cut its
        # estimate (nor wipe out every link's)
        if self._overdrive_streak and s0 < self._overdrive_first_end:
            return  # the same datagrams as the first sign, partly: wait for the next span
        self._overdrive_streak += 1
        self._overdrive_first_end = s1
        if self._overdrive_streak >= 2:
            self._bw.reset(now, max(MIN_RATE, delivered, 0.5 * self.capacity()))
            self._end_startup()
            self.overdriven += 1
            self._overdrive_streak = 0
            self._overdrive_from = s1

    def _delivered_if_short(self, since: float) -> float | None:
        """The delivery rate of the datagrams sent since `since`, if they arrived more slowly
        than they were sent (by BRAKE_EXCESS, over at least BRAKE_SPAN of receiver time, less
        what the link's jitter alone can stretch it by); else None (too few to judge, or
        delivered as fast as sent)."""
        sent_at = self._hist_sent
        for k in range(len(sent_at) - 1):
            s0 = sent_at[k]
            if s0 is None or s0 < since:
                continue
            span = self._span(k)
            if span is None:
                return None
            delivered, sent, sent_bytes, rx_span = span
            if rx_span < BRAKE_SPAN or sent_bytes < OVERDRIVE_MIN_BYTES // 2:
                return None
            credit = min(BRAKE_JITTER_CREDIT * self.delay_noise, rx_span / 2)
            unstretched = delivered * rx_span / (rx_span - credit)  # had jitter not stretched it
            return delivered if sent > BRAKE_EXCESS * unstretched else None
        return None

    def _span(self, k: int) -> tuple[float, float, int, float] | None:
        """What the receiver got between report `k` and the latest, against what we sent of
        those very datagrams (by the send times the two reports echo): (delivered bit/s,
        sent bit/s, bytes sent, receiver seconds); None where a send time is not known."""
        hist, sent_at = self._hist, self._hist_sent
        s0, s1 = sent_at[k], sent_at[-1]
        if s0 is None or s1 is None or s1 - s0 <= 0:
            return None
        start, end = self._sent_by(s0), self._sent_by(s1)
        if start is None or end is None:
            return None
        (t0, b0), (t1, b1) = hist[k], hist[-1]
        rx_span = _rx_span(t1, t0)
        if rx_span <= 0:
            return None
        return _bits(b1, b0) / rx_span, (end - start) * 8 / (s1 - s0), end - start, rx_span

    def on_queue(self, now: float, queue: float, data_idle: bool) -> None:
        """`queue`: standing queue from one-way delays; `data_idle`: no data was sent on the
        link for a round trip, so only probes were measured and what shows is path noise."""
        self.queue = queue
        self._cycle_max_queue = max(self._cycle_max_queue, queue)
        if data_idle:
            # a plain mean of the first readings, then a moving average: a tunnel that
            # starts a transfer right after it comes up must already know its links' jitter
            self._noise_samples += 1
            weight = max(NOISE_WEIGHT, 1 / self._noise_samples)
            self.delay_noise += (queue - self.delay_noise) * weight
        if not self.braking():
            self._brake_since = None
        elif self._brake_since is None:
            self._brake_since = now
        elif now - self._brake_since > self.srtt + SAMPLE_SPAN:
            # a standing queue this large, for longer than a delivery sample lags, and the
            # datagrams sent since it showed (paced under the estimate) still arrive slower
            # than they left: the link is saturated, so what gets through is its capacity
            # (the estimate was too high, or the link got slower). At most halve it per
            # confirmation. A path whose delay merely stepped up (a LEO satellite's handover,
            # a route change) delivers them as fast as they left: it keeps its estimate.
            delivered = self._delivered_if_short(self._brake_since)
            if delivered is not None and delivered < self.capacity():
                self._bw.reset(now, max(MIN_RATE, delivered, 0.5 * self.capacity()))
                self._brake_since = now
                self.braked += 1
        if not self.reserved:
            full = 2 * self.queue_target()
        elif self.proven:
            full = self.reserved_queue_target()
        else:
            # from the guess, a full datagram's time at it (12 ms at 1 Mbit/s): 4 ms let a
            # WiFi's jitter end its startup at the guess, and it stayed there, reserved
            full = max(self.reserved_queue_target(), FULL_PACKET_BITS / self.capacity())
        if self.startup and queue > full:
            self._end_startup()  # the pipe is full
            self._phase = 1  # drain what startup queued
            self._phase_start = now

    def on_phase_clock(self, now: float, srtt: float | None) -> None:
        """Advance the gain cycle (and judge startup) once per round trip."""
        self.srtt = srtt or MIN_PHASE
        length = self._phase_length()
        if now < self._phase_start + length:
            return
        self._phase_start = now
        self._phase = (self._phase + 1) % len(CYCLE)
        if self._phase == 0:
            # driven, probed, and still no queue, or the probe delivered nearly in full:
            # there is headroom (jitter spikes can hide the first sign, never the second).
            # A reserved link shows little queue anyway (held under its estimate, gentle
            # probe): it must show none at all, not even from its probe.
            if self.reserved:
                headroom = self._cycle_max_queue < 0.5 * self.reserved_queue_target()
            else:
                headroom = (self._cycle_max_queue < self.queue_target()
                            or self._cycle_max_rate > PROBE_HEADROOM * self._cycle_capacity)
            if self.driven(now) and headroom:
                self._to("headroom")
            self._cycle_max_queue = 0.0
            self._cycle_max_rate = 0.0
            self._cycle_capacity = self.capacity()

    def _to(self, event: str) -> None:
        before = self.mode
        self._set_mode(TRANSITIONS.get((before, event), before))
        if event == "full" and before is not Mode.CYCLE:
            self._cycle_max_rate = 0.0  # what startup delivered is no probe
            self._cycle_capacity = self.capacity()

    def _set_mode(self, mode: Mode) -> None:
        """The mode, and the two flags read per packet that follow from it (attributes, not
        properties: the data path reads them for every datagram)."""
        self.mode = mode
        self.startup = mode is not Mode.CYCLE
        self.proven = mode is not Mode.FIRST_STARTUP  # the estimate was measured, not guessed

    def _end_startup(self) -> None:
        self._to("full")

    def restart_startup(self) -> None:
        self._to("headroom")

    def on_readmitted(self, now: float) -> None:
        """The link is back after an outage: its delivery and send histories predate it."""
        self._hist.clear()
        self._hist_sent.clear()
        self._overdrive_from = now
        self._overdrive_streak = 0
        self._brake_since = None
        self.queue = None

    # ---------------------------------------------------------------- outputs

    def capacity(self) -> float:
        return max(MIN_RATE, self._bw.get(self.initial_rate))

    def queue_target(self) -> float:
        """A standing queue this large is normal for the link (a few ms, two packets on a slow
        link, its delay noise); the brake acts far above it."""
        return max(0.004, 2 * FULL_PACKET_BITS / self.capacity(), 2 * self.delay_noise)

    def reserved_queue_target(self) -> float:
        """What may stand in a reserved link's queue: about one of its (short) datagrams."""
        return max(RESERVED_DATAGRAM_TIME, RESERVED_DATAGRAM_MIN_BITS / self.capacity(),
                   2 * self.delay_noise)

    def _startup_gain(self) -> float:
        if self.reserved:
            return RESERVED_STARTUP_GAIN if self.proven else RESERVED_FIRST_STARTUP_GAIN
        return RESTARTUP_GAIN if self.proven else STARTUP_GAIN

    def braking(self) -> bool:
        return self.queue is not None and self.queue > max(BRAKE_FLOOR, 2 * self.queue_target())

    def pacing_rate(self) -> float:
        """The rate to pace at now (reading it changes nothing)."""
        cap = self.capacity()
        if self.braking():
            return max(MIN_RATE, cap * BRAKE_GAIN)
        if self.startup:
            return cap * self._startup_gain()
        if self.reserved:
            if self.queue is not None and self.queue > self.reserved_queue_target():
                return cap * RESERVED_DRAIN
            return cap * RESERVED_CYCLE[self._phase]
        gain = CYCLE[self._phase]
        if gain == 1.0 and self.queue is not None and self.queue > self.queue_target():
            gain = CRUISE_DRAIN
        return cap * gain
