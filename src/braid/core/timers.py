"""Every deadline and interval of the protocol, in one place (as wireguard-go's timers.go).

All in seconds of the monotonic clock the core is given. The estimator's own model
parameters (sample spans, windows, gains) stay in core/estimator.py; how each figure here
was chosen, and what was measured when it changed, is in docs/tuning.md.
"""

from __future__ import annotations

# ---------------------------------------------------------------- a link's health (core/link.py)
FEEDBACK_INTERVAL = 0.020  # receiver reports per link at most this often while data flows
PROBE_INTERVAL = 0.100  # keepalive probe on a link idle this long
SUSPECT_PROBE_INTERVAL = 0.030  # probes on a suspect link, to see it come back quickly
SILENCE_FLOOR = 0.150  # below this, a busy host's scheduling hiccups look like outages
SILENCE_MARGIN = 0.050  # added to three of the peer's probe intervals before silence counts
IDLE_SILENCE = 3 * PROBE_INTERVAL + SILENCE_MARGIN  # nothing owed, yet not even the peer's probes
FIRST_RESPONSE_TIMEOUT = 0.3  # an answer may take this long on a link with no RTT measured yet
DOWN_AFTER = 2.0  # suspect this long: down
HEARD_INTERVAL = 0.050  # the receiver's HEARD report rides a link's datagrams at most this often
LIVE_WINDOW = 3 * PROBE_INTERVAL  # a link heard this recently can still bring a missing packet
# idle cost: with no data either way for IDLE_AFTER, links are probed every IDLE_PROBE (and
# answers ride the next probe); a backup link on standby every STANDBY_PROBE. An idle
# primary then costs about 20 MB a day, a standby backup about 1 MB (two probes of about
# 110 bytes, feedback and HEARD report included, per interval; rekeys skip it).
IDLE_AFTER = 5.0
IDLE_PROBE = 1.0
STANDBY_PROBE = 20.0
STANDBY_SUSPECT_PROBE = 1.0  # a standby link that went quiet: probed this often to see it back
IDLE_GRACE = 2.0  # seconds an idle end still answers probes at once (the peer may not be idle yet)

# ---------------------------------------------------------------- the data (core/bond.py, receiver, recovery)
REORDER_TIMEOUT_MAX = 1.0  # a gap holds a flow at most this long (a satellite's delay spread)
REORDER_TIMEOUT_MIN = 0.010  # ... and at least this long
REORDER_MARGIN = 0.005  # added to the spread of the live links' one-way delays
NACK_HOLD_RTTS = 1.5  # after a NACK, gaps wait this many round trips of the NACKed links ...
NACK_HOLD_MARGIN = 0.010  # ... plus this, for the resends
RECOVERY_ROOM_HOLD = 5.0  # a link's tunnel queue keeps the room for a recovery burst this long after a NACK
UNKNOWN_RTT = 0.1  # the round trip assumed for a link that has not measured one
FRAGMENT_TIMEOUT = 2.0  # a partly received packet waits this long for its other fragments
RESEND_AGE = 1.0  # older packets are not worth resending
INTERACTIVE_HOLD = 2.0  # the lowest-latency link stays reserved this long after interactive traffic
WARMUP_TIME = 2.0  # a new link may be kept busy with padding this long while its first startup measures it
REPORT_STALE = 60.0  # a HEARD report this old is taken whatever its timestamp
BULK_LINKS_REFRESH = 0.050  # the choice of links bulk may take is kept this long
LINK_BACKLOG = 0.002  # a packet may be handed to the socket this long ahead of its paced time

# ---------------------------------------------------------------- keys and handshakes (session, handshake)
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
KEEP_PREVIOUS = 10.0  # the previous keys still open datagrams this long after a rekey
REKEY_RETRY = 1.0  # between handshake attempts while unanswered (plus up to 0.2 s jitter)
SESSION_SILENCE = 1.0  # no authenticated datagram on any link this long: handshake again
UNANSWERED_TELL = 5.0  # unanswered handshakes this long before the client says so
ANSWER_COPY_TIME = 1.0  # a response is copied to the same initiation's other links this long
COOKIE_SECRET_LIFE = 120.0  # a cookie secret (and so a cookie) is good this long
COOKIE_USE_LIFE = COOKIE_SECRET_LIFE - 10.0  # an initiator stops using a cookie this old

# ---------------------------------------------------------------- peer addresses (core/sources.py)
SOURCE_FRESH = 2.0  # an address stays in use this long after a newer one was last heard
SOURCE_REFRESH = 0.5  # between recomputations of the addresses in use while none is new
CHALLENGE_RETRY = 0.5  # an unanswered challenge is sent again after this, doubling each time
CHALLENGE_RETRY_MAX = 8.0  # up to this

# ---------------------------------------------------------------- logs (core/gateway.py)
TWIN_LOG_INTERVAL = 60.0  # between two logs of one client's key used twice
TELL_INTERVAL = 10.0  # between two event lines of one kind of refused handshake
