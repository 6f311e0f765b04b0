"""The daemon's event loop: one epoll, one timer (the core's next deadline), signals as a wakeup."""

from __future__ import annotations

import logging
import select
import signal
import socket
import time
from collections.abc import Callable

log = logging.getLogger("braid.loop")

FAULT_LOG_INTERVAL = 10.0  # seconds between logged tracebacks of internal errors


class Faults:
    """The daemon boundary: an exception while handling one datagram, one TUN packet or one
    timer is counted (`internal_errors` in status) and logged with its traceback, at most
    once per FAULT_LOG_INTERVAL, and the daemon carries on."""

    def __init__(self) -> None:
        self.count = 0
        self._next_log = 0.0
        self._unlogged = 0

    def record(self, where: str) -> None:
        """Call from an `except Exception:` block."""
        self.count += 1
        now = time.monotonic()
        if now < self._next_log:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more since the last one logged)" if self._unlogged else ""
        log.error("internal error while handling %s%s; carrying on", where, more, exc_info=True)
        self._next_log = now + FAULT_LOG_INTERVAL
        self._unlogged = 0


class EventLoop:
    def __init__(self) -> None:
        self.epoll = select.epoll()
        self._handlers: dict[int, Callable[[float], None]] = {}
        self.stopping = False
        self.reload_requested = False  # SIGHUP: the daemon re-reads its config
        self.faults = Faults()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.add(self._wake_r.fileno(), self._on_wakeup)

    def add(self, fd: int, handler: Callable[[float], None]) -> None:
        self._handlers[fd] = handler
        self.epoll.register(fd, select.EPOLLIN)

    def remove(self, fd: int) -> None:
        """Before the fd is closed."""
        if self._handlers.pop(fd, None) is not None:
            self.epoll.unregister(fd)

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)

    def _on_hangup(self, signum: int, frame: object) -> None:
        self.reload_requested = True

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def wait_for_signal(self, seconds: float) -> bool:
        """Sleep up to `seconds` (before the loop runs); True if SIGINT/SIGTERM came."""
        self.install_signals()
        self.epoll.poll(seconds)
        self._on_wakeup(0.0)
        return self.stopping

    def _on_wakeup(self, now: float) -> None:
        try:
            while self._wake_r.recv(64):
                pass
        except BlockingIOError:
            pass

    def run(self, deadline: Callable[[], float], on_timer: Callable[[float], None],
            after_batch: Callable[[float], None]) -> None:
        """Until a signal: wait for I/O or the deadline, dispatch, run timers, flush."""
        monotonic = time.monotonic
        poll = self.epoll.poll
        handlers = self._handlers
        faults = self.faults
        while not self.stopping:
            now = monotonic()
            try:
                timeout = deadline() - now
            except Exception:
                faults.record("the next deadline")
                timeout = 0.01
            events = poll(min(max(timeout, 0.0), 1.0)) if timeout > 0 else poll(0)
            now = monotonic()
            for fd, _ in events:
                try:
                    handlers[fd](now)
                except Exception:
                    faults.record(f"input on fd {fd}")
            try:
                if now >= deadline():
                    on_timer(now)
            except Exception:
                faults.record("a timer")
            try:
                after_batch(now)
            except Exception:
                faults.record("sending and delivering")

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        self.epoll.close()
        self._wake_r.close()
        self._wake_w.close()
