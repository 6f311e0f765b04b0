"""Typed request/reply over a unix socket: one JSON line in, one JSON line out."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("braid.control")

Handler = Callable[[dict[str, Any]], dict[str, Any]]


READ_BUDGET = 1.0  # seconds a control client has to send its whole request
MAX_REQUEST = 65536


class ControlServer:
    """The status socket, off the data path: a thread accepts and reads each request (a slow
    or hostile local client can only stall that thread), hands it to the event loop through a
    wake-up socket, and sends the reply the loop made. The loop's part, `serve_one`, only
    calls the handler: never a read or write on a client's connection."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise OSError(f"control path {path} exists and is not a socket: not removing it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                raise OSError(f"control socket {path} is in use by a running daemon")
            except ConnectionRefusedError:
                os.unlink(path)  # stale, left by a crashed daemon
            finally:
                probe.close()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o600)
        self.sock.listen(8)
        self.sock.settimeout(0.2)  # the thread looks at `_stopping` this often
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._requests: queue.SimpleQueue[tuple[dict[str, Any], queue.SimpleQueue[dict[str, Any]]]] = (
            queue.SimpleQueue())
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="braid-control", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        """Readable when a request waits for the loop."""
        return self._wake_r.fileno()

    def serve_one(self) -> None:
        """Loop side: answer every request the thread has read."""
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(64):
                pass
        while True:
            try:
                request, slot = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                reply = self.handler(request)
            except Exception as exc:  # a status bug must not end the daemon
                log.exception("control request failed")
                reply = {"ok": False, "error": f"internal error: {exc}"}
            slot.put(reply)

    def ask(self, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """From another thread (the metrics server): the loop's reply to `request`."""
        slot: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._requests.put((request, slot))
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"x")
        return slot.get(timeout=timeout)

    def _serve(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            with conn:
                self._serve_connection(conn)

    def _serve_connection(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + READ_BUDGET
        try:
            data = b""
            while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("request not complete within 1 s")
                conn.settimeout(left)
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            request = json.loads(data or b"{}")
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            slot: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
            self._requests.put((request, slot))
            with contextlib.suppress(BlockingIOError):
                self._wake_w.send(b"x")
            reply = slot.get(timeout=5.0)
        except (OSError, ValueError, queue.Empty) as exc:
            reply = {"ok": False, "error": str(exc) or type(exc).__name__}
        try:
            conn.settimeout(1.0)
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError as exc:
            log.debug("control reply failed: %s", exc)

    def close(self) -> None:
        self._stopping = True
        self.sock.close()
        self._thread.join(timeout=1.0)
        self._wake_r.close()
        self._wake_w.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def request(path: str, message: dict[str, Any], timeout: float = 3.0) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
