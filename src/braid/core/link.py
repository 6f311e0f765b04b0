"""One uplink as seen by one tunnel end: configured state, health machine and estimators.

Configured state (what the operator set) is `LinkConfig`; everything measured lives in
`Link`, which composes its parts: `LinkHealth` (core/health.py: each direction's state and
timers), `ReceiveReport` (what arrived, and the wire.Feedback owed for it), `PathStats`
(core/path.py: round trip, queue and loss from the peer's reports), the rate estimator
(core/estimator.py) and the pacing clock (core/pacer.py). Times are monotonic seconds passed
in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import wire
from .estimator import INITIAL_RATE, STARTUP_GAIN, RateEstimator
from .health import Health, LinkHealth
from .pacer import Pacer
from .path import PathStats
from .replay import seq_diff
from .timers import (
    FEEDBACK_INTERVAL,
    FIRST_RESPONSE_TIMEOUT,
    IDLE_PROBE,
    PROBE_INTERVAL,
    SILENCE_FLOOR,
    STANDBY_PROBE,
    STANDBY_SUSPECT_PROBE,
    SUSPECT_PROBE_INTERVAL,
    UNKNOWN_RTT,
)
from .windowed import WindowedMax

PEAK_WINDOW = 30.0  # seconds of capacity estimates a far link is judged by (scheduler.FAR_SHARE)


PRIMARY, BACKUP = "primary", "backup"


@dataclass(frozen=True, slots=True)
class LinkConfig:
    name: str
    link_id: int
    mtu: int = 1500
    role: str = PRIMARY  # BACKUP: carries traffic only while no primary link is usable


class ReceiveReport:
    """What this end received on one link, and the receiver report (wire.Feedback) it owes
    the peer for it: counts, the last arrival and its timestamp, the lowest one-way delay
    since the last report, the highest AEAD counter (loss and recovery read it), and a
    smoothed one-way delay with its deviation (the reorder deadline reads them)."""

    __slots__ = ("bytes", "highest_counter", "last_arrival", "last_gap", "last_sent", "last_ts",
                 "owd_avg", "owd_dev", "owd_min", "packets", "pending")

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.last_ts = 0  # the sender's timestamp on the latest datagram
        self.last_arrival = 0.0
        self.owd_min: int | None = None  # us, since the last report
        self.highest_counter = -1
        self.last_gap = -1.0  # when a datagram last arrived past a counter gap (Bond._detect_gap)
        self.pending = False  # data or a probe arrived that a report must answer
        self.last_sent = -1.0  # when the last report went out
        self.owd_avg: float | None = None  # us
        self.owd_dev = 0.0

    def on_datagram(self, now: float, now_us: int, size: int, ts: int, counter: int,
                    wants_feedback: bool) -> None:
        self.packets += 1
        self.bytes += size
        self.last_ts = ts
        self.last_arrival = now
        owd = seq_diff(now_us, ts)
        if self.owd_min is None or owd < self.owd_min:
            self.owd_min = owd
        if self.owd_avg is None:
            self.owd_avg = float(owd)
        else:
            err = owd - self.owd_avg
            self.owd_avg += err / 16
            self.owd_dev += (abs(err) - self.owd_dev) / 8
        if counter > self.highest_counter:
            self.highest_counter = counter
        if wants_feedback:
            self.pending = True

    def due(self, now: float) -> bool:
        """A report is owed and FEEDBACK_INTERVAL has passed since the last one."""
        return self.pending and now >= self.last_sent + FEEDBACK_INTERVAL

    def feedback(self, link_id: int, now: float) -> wire.Feedback:
        """The report, as sent now (what it covers starts over)."""
        hold = int((now - self.last_arrival) * 1e6)
        # rx_time is the last counted arrival: rx_bytes over the time between two reports'
        # rx_times is then exactly what arrived in between, with no report-timing jitter
        fb = wire.Feedback(link_id, self.packets, self.bytes, self.last_ts, max(0, hold),
                           int(self.last_arrival * 1e6), self.owd_min or 0,
                           max(0, self.highest_counter))
        self.pending = False
        self.owd_min = None
        self.last_sent = now
        return fb


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


@dataclass(frozen=True, slots=True)
class LinkSnapshot:
    """A link as status and metrics show it at one moment (control/ reads only this)."""

    name: str
    id: int
    state: str  # the worse of the two directions: up, suspect, down
    state_rx: str
    state_tx: str
    role: str
    standby: bool
    rtt_ms: float | None
    rttvar_ms: float | None
    min_rtt_ms: float | None
    loss: float
    capacity_bps: int
    pacing_bps: int
    queue_delay_ms: float | None
    queue_target_ms: float | None
    delay_noise_ms: float | None
    delivery_bps: int
    startup: bool
    estimator: str  # its mode
    overdriven: int  # estimate cuts: sent far above what arrived
    braked: int  # estimate cuts: a standing queue far above the link's own
    reserved: bool
    warming: bool
    tx_packets: int
    tx_bytes: int
    rx_packets: int
    rx_bytes: int


class Link:
    """Observed state of one link at one end: what we sent, what we heard, what we estimate."""

    def __init__(self, config: LinkConfig, now: float) -> None:
        self.config = config
        self.id = config.link_id
        self.name = config.name
        self.role = config.role
        self.standby = False  # a backup link while a primary is usable: no traffic, rare probes
        self.peer_standby = False  # the gateway's side: the client's reports say it stands by
        self.health = LinkHealth(now)  # each direction's, with its timers
        # sending side
        self.tx_packets = 0
        self.tx_bytes = 0
        self.last_tx = -1.0
        self.last_data_tx = -1.0
        self.warm_until = -1.0  # the bond keeps the new link busy with padding until then
        self.pacer = Pacer(now, INITIAL_RATE * STARTUP_GAIN)
        self.report = ReceiveReport()  # receiving side: what we heard, what we report
        self.last_heard_report_tx = -1.0
        # the peer's send frontier on this link: every seq below it that the peer gave this
        # link has been sent on it (from the latest DATA or PROBE on it; links keep their
        # own order, so a gap below it that the link was to bring is lost)
        self.sent_below = 0
        self.sent_below_known = False
        # fed by the peer's receiver reports
        self.path = PathStats()
        self.est = RateEstimator(now)
        self._peak = WindowedMax(PEAK_WINDOW)  # capacity estimates, for judging a far link
        self._busy_queue = 0.0  # the last standing queue seen while data flowed
        self._overshoot_number = -1  # the last datagram sent while a startup filled the link
        # cached for the scheduler, refreshed on each feedback
        self.path_delay = 0.05

    def __repr__(self) -> str:
        srtt = "-" if self.path.srtt is None else f"{self.path.srtt * 1000:.1f}ms"
        return (f"Link({self.name!r} id={self.id} rx={self.health.rx.value} tx={self.health.tx.value} "
                f"capacity={self.est.capacity() / 1e6:.2f}M pace={self.pacer.rate / 1e6:.2f}M srtt={srtt} "
                f"queued={self.pacer.queued}B startup={self.est.startup})")

    def snapshot(self, now: float) -> LinkSnapshot:
        path = self.path
        srtt = path.srtt
        return LinkSnapshot(
            self.name, self.id, self.state.value, self.health.rx.value, self.health.tx.value,
            self.role, self.standby, _ms(srtt), _ms(None if srtt is None else path.rttvar),
            _ms(path.lowest_rtt()), round(path.loss, 4), round(self.est.capacity()), round(self.pacer.rate),
            _ms(self.path.queue_delay()), _ms(self.est.queue_target()), _ms(self.est.delay_noise),
            round(self.est.recent_rate), self.est.startup, self.est.mode.value, self.est.overdriven,
            self.est.braked, self.est.reserved, self.warming(now), self.tx_packets, self.tx_bytes,
            self.report.packets, self.report.bytes)

    # ------------------------------------------------------------ health

    @property
    def healthy(self) -> bool:
        """Both directions work: data needs its feedback back on the same link."""
        return self.health.both_up

    @property
    def usable(self) -> bool:
        """It may carry traffic: healthy and not a backup on standby."""
        return self.health.both_up and not self.standby

    @property
    def state(self) -> Health:
        return self.health.state

    def probe_interval(self, idle: bool) -> float:
        """How often this end probes the link when it sends nothing else on it."""
        if self.standby:
            return STANDBY_PROBE if self.healthy else STANDBY_SUSPECT_PROBE
        if not self.healthy:
            return SUSPECT_PROBE_INTERVAL
        return IDLE_PROBE if idle else PROBE_INTERVAL

    def response_timeout(self) -> float:
        """How long an answer to data or a probe sent on this link may take."""
        srtt = self.path.srtt
        if srtt is None:
            return FIRST_RESPONSE_TIMEOUT
        # answers travel behind whatever queue the path holds: allow for the one measured
        queue = self.path.queue_delay() or 0.0
        return max(SILENCE_FLOOR, srtt + 4 * self.path.rttvar + 2 * FEEDBACK_INTERVAL + 2 * queue)

    def readmit(self, now: float) -> None:
        """A direction came back up: pacing starts from now and the estimator from what it knew."""
        self.pacer.restart(now)
        self.est.on_readmitted(now)

    def silence_deadline(self) -> float:
        return self.health.silence_deadline(self.response_timeout())

    def answer_deadline(self) -> float:
        return self.health.answer_deadline(self.response_timeout(), self.report.last_gap, self.est.startup)

    def check_answer(self, now: float) -> Health | None:
        """The send direction's answer rule (core/health.py), with this link's path figures."""
        return self.health.check_answer(now, self.response_timeout(), self.report.last_gap, self.est.startup)

    # ------------------------------------------------------------ estimators

    def on_feedback(self, fb: wire.Feedback, now: float, now_us: int) -> None:
        """The peer's receiver report about this link arrived (`now_us`: its arrival, in
        this end's clock, which the report's echoed timestamp is in)."""
        delivery = self.path.on_report(fb, now, now_us, self.tx_bytes, self._overshoot_number)
        self.est.on_delivery(now, delivery.rx_time_us, delivery.rx_bytes, delivery.sent_at)
        queue = self.path.queue_delay()
        if queue is not None:
            rtt = self.path.srtt if self.path.srtt is not None else UNKNOWN_RTT
            # idle once what data last queued has drained too (a warm-up can leave 200 ms
            # on a slow link): its queue is not the path's noise
            idle = now - self.last_data_tx > rtt + 2 * FEEDBACK_INTERVAL + self._busy_queue
            if not idle:
                self._busy_queue = queue
            self.est.on_queue(now, queue, data_idle=idle)
        self.est.on_phase_clock(now, self.path.srtt)
        self.refresh()
        self._peak.update(now, self.est.capacity())

    def on_sent(self, size: int, now: float, data: bool, number: int) -> None:
        """A datagram of `size` wire bytes and packet `number` left on this link (`data`:
        it carried data or padding, not only control frames)."""
        if self.est.startup and self.est.backlogged_since is not None:
            # a startup filling the link (data or warm-up padding) paces above its capacity
            # on purpose until the bottleneck's queue shows, and the queue then holds that
            # overshoot: what it drops is this end's doing, not the path's loss (a 3x first
            # startup read 30 % on a lossless link, which took minutes to fade on an idle
            # one, every realtime packet copied meanwhile)
            self._overshoot_number = number
        self.tx_packets += 1
        self.tx_bytes += size
        self.last_tx = now
        self.est.on_sent(now, self.tx_bytes)
        if data:
            self.last_data_tx = now

    def on_backlog(self, now: float, backlogged: bool) -> None:
        """The tunnel's queue for this link became non-empty (True) or empty (False)."""
        if not backlogged:
            self.est.backlogged_since = None
        elif self.est.backlogged_since is None:
            self.est.backlogged_since = now

    def restart_startup(self) -> None:
        self.est.restart_startup()
        self.refresh()

    def set_reserved(self, reserved: bool) -> None:
        self.est.reserved = reserved
        self.refresh()

    def refresh(self) -> None:
        self.pacer.rate = self.est.pacing_rate()
        self.path_delay = self.path.one_way_delay() + (self.path.queue_delay() or 0.0)

    # figures of the estimator (`est`) and the path (`path`) are read from them directly

    def peak_capacity(self) -> float:
        """The highest capacity estimate of the last PEAK_WINDOW of feedback."""
        return max(self.est.capacity(), self._peak.get(0.0))

    def warming(self, now: float) -> bool:
        """Up, not yet measured, and within its warm-up: padding fills what data leaves."""
        return now < self.warm_until and not self.est.proven and self.usable

    # ------------------------------------------------------------ receive side bookkeeping

    def on_peer_restart(self) -> None:
        self.health.on_peer_restart()

    def restart_numbers(self) -> None:
        """The peer's packet numbers and its report counts start over."""
        self.report.highest_counter = -1
        self.path.restart_numbers()
