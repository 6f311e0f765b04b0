"""A link's health in each direction, with its own timers (issue 11's per-direction health).

Receive health (`rx`) comes from what this end hears on the link: silence past the
peer's probe rhythm makes it suspect, then down; READMIT_GOOD datagrams in a row make it
up again. Send health (`tx`) comes from what the peer says of what this end sent: its
HEARD reports (heard lately, or not), and its receiver reports (FEEDBACK) about the link,
which answer data sent on it within the link's response timeout.

The response timeout and the last counter gap on the way back are the link's path
measurements, passed in (core/link.py). Times are monotonic seconds.
"""

from __future__ import annotations

import enum

from .timers import DOWN_AFTER, IDLE_SILENCE, PROBE_INTERVAL, SILENCE_MARGIN

READMIT_GOOD = 3  # datagrams heard in a row before a suspect link is used again


class Health(enum.Enum):
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"


class HealthEvent(enum.Enum):
    SILENT = "silent"  # nothing heard for longer than the silence limit
    LONG_SILENT = "long-silent"
    HEARD_ENOUGH = "heard-enough"  # READMIT_GOOD datagrams heard since it went quiet


HEALTH_TRANSITIONS: dict[tuple[Health, HealthEvent], Health] = {
    (Health.UP, HealthEvent.SILENT): Health.SUSPECT,
    (Health.SUSPECT, HealthEvent.LONG_SILENT): Health.DOWN,
    (Health.SUSPECT, HealthEvent.HEARD_ENOUGH): Health.UP,
    (Health.DOWN, HealthEvent.HEARD_ENOUGH): Health.UP,
}

_ORDER = (Health.UP, Health.SUSPECT, Health.DOWN)


class LinkHealth:
    def __init__(self, now: float) -> None:
        self.rx = Health.SUSPECT  # unproven until heard from
        self.tx = Health.UP  # as the peer's reports tell it
        self.tx_silent_since = now
        self.heard_in_row = 0
        self.ever_up = False  # its receive health has been up: the HEARD report vouches for it
        self.last_heard = -1.0
        self.silent_since = now
        self.quiet_from = now  # silence counts from here at the earliest (a mode change resets it)
        self.peer_interval = PROBE_INTERVAL  # how often the peer probes it now (silence rules)
        # the first data/probe/padding sent on it since the peer's last receiver report about
        # it: only such a report answers what was sent (the link's other direction may still
        # bring datagrams when this one is dead)
        self.awaiting_since: float | None = None
        # ... the first data or padding: a peer answers those at once, while one that thinks
        # the tunnel idle answers probes only with its own (core/bond.py _keepalive)
        self.data_unanswered_since: float | None = None

    def __repr__(self) -> str:
        return f"LinkHealth(rx={self.rx.value} tx={self.tx.value} last_heard={self.last_heard:.3f})"

    @property
    def both_up(self) -> bool:
        return self.rx is Health.UP and self.tx is Health.UP

    @property
    def state(self) -> Health:
        """The worse of the two directions."""
        return max(self.rx, self.tx, key=_ORDER.index)

    def heard_window(self) -> float:
        """How long after the last datagram this end still reports the link heard: three of
        the peer's probe intervals (with data flowing it hears far more often)."""
        return max(IDLE_SILENCE, 3 * self.peer_interval + SILENCE_MARGIN)

    def heard_lately(self, now: float) -> bool:
        return self.last_heard >= 0 and now - self.last_heard < self.heard_window()

    def _spoke_since(self, since: float, response_timeout: float) -> bool:
        """The link brought a datagram the other way past half the response timeout after
        `since`: the way back works (what arrived earlier could have left the peer before a
        cut of both ways). The one line between blaming the receive direction for a missing
        answer (check_silence) and the send direction (check_answer)."""
        return self.last_heard >= since + response_timeout / 2

    # ------------------------------------------------------------ receive direction

    def _fire(self, event: HealthEvent) -> None:
        self.rx = HEALTH_TRANSITIONS[(self.rx, event)]

    def on_heard(self, now: float) -> Health | None:
        """Any authenticated datagram arrived on the link. Returns the new receive health
        if it changed."""
        self.last_heard = now
        self.heard_in_row += 1
        if self.rx is not Health.UP and self.heard_in_row >= READMIT_GOOD:
            self._fire(HealthEvent.HEARD_ENOUGH)
            self.ever_up = True
            return self.rx
        return None

    def check_silence(self, now: float, response_timeout: float) -> Health | None:
        if now < self.silence_deadline(response_timeout):
            return None
        if self.rx is Health.UP:
            self._fire(HealthEvent.SILENT)
            self.heard_in_row = 0
            self.silent_since = now
            return self.rx
        if self.rx is Health.SUSPECT:
            self._fire(HealthEvent.LONG_SILENT)
            return self.rx
        return None

    def silence_deadline(self, response_timeout: float) -> float:
        """When check_silence next has something to do (inf for a down link)."""
        quiet_since = self.last_heard if self.last_heard >= 0 else self.silent_since
        if self.rx is Health.UP:
            quiet_since = max(quiet_since, self.quiet_from)
            deadline = quiet_since + self.heard_window()
            since = self.awaiting_since
            if since is not None and not self._spoke_since(since, response_timeout):
                # unanswered and the way back silent: it is the suspect
                deadline = min(deadline, since + response_timeout)
            return deadline
        if self.rx is Health.SUSPECT:
            return max(quiet_since, self.silent_since) + DOWN_AFTER
        return float("inf")

    # ------------------------------------------------------------ send direction

    def on_sent_expecting_answer(self, now: float, data: bool) -> None:
        """Data, padding (`data`) or a probe left on the link: the peer owes a report on it."""
        if self.awaiting_since is None:
            self.awaiting_since = now
        if data and self.data_unanswered_since is None:
            self.data_unanswered_since = now

    def forget_awaited(self) -> None:
        """Nothing sent so far is owed an answer (a mode change, or a peer that restarted)."""
        self.awaiting_since = self.data_unanswered_since = None

    def on_answered(self) -> Health | None:
        """A receiver report about the link arrived: the peer hears what was sent on it.
        Returns the new send health if it changed."""
        self.forget_awaited()
        if self.tx is Health.UP:
            return None
        self.tx = Health.UP
        return self.tx

    def on_peer_report(self, now: float, heard: bool, response_timeout: float) -> Health | None:
        """The peer's HEARD report on the link (one it has heard this session). Returns the
        new send health if it changed."""
        if heard:
            if self.tx is Health.UP or self._report_may_predate(now, response_timeout):
                return None
            self.tx = Health.UP
            return self.tx
        if self.tx is Health.UP:
            self.tx = Health.SUSPECT
            self.tx_silent_since = now
            return self.tx
        if self.tx is Health.SUSPECT and now - self.tx_silent_since >= DOWN_AFTER:
            self.tx = Health.DOWN
            return self.tx
        return None

    def _report_may_predate(self, now: float, response_timeout: float) -> bool:
        """Data sent on the link went unanswered, and "heard" in a HEARD report (heard within
        the peer's window, about our heard_window) may still mean datagrams that left
        before it: only a receiver report, or a HEARD report past that window, readmits."""
        since = self.data_unanswered_since
        if since is None:
            return False
        overdue = since + response_timeout
        return overdue <= now < overdue + self.heard_window()

    def check_answer(self, now: float, response_timeout: float, last_gap: float,
                     ramping: bool = False) -> Health | None:
        """The send direction is suspect when data sent on the link went unanswered for the
        response timeout while the link still brought datagrams the other way, past half
        that timeout (with nothing heard since then, check_silence suspects the receive
        direction instead: the same deadline, the other side of the same line)."""
        if now < self.answer_deadline(response_timeout, last_gap, ramping):
            return None
        self.tx = Health.SUSPECT
        self.tx_silent_since = now
        return self.tx

    def answer_deadline(self, response_timeout: float, last_gap: float, ramping: bool = False) -> float:
        """When check_answer next has something to do (inf if nothing is awaited). Answers
        travel the way back: once that loses datagrams (`last_gap`: when a datagram last
        arrived past a counter gap; a full queue drops bursts), missing answers prove nothing
        about this direction, and only the peer's HEARD reports, which travel on every link,
        tell it. Nor while the link's rate is `ramping` (its estimator's startup grows the
        queue ahead of the answers by up to a round trip per round trip)."""
        since = self.data_unanswered_since
        if (since is None or self.tx is not Health.UP or last_gap >= since or ramping
                or not self._spoke_since(since, response_timeout)):
            return float("inf")
        return since + response_timeout

    def on_peer_restart(self) -> None:
        """The peer's view of the link starts over: its reports tell the truth again (and
        what was sent to the peer it replaced will never be answered)."""
        self.tx = Health.UP
        self.forget_awaited()
