"""One bulk transfer over one QUIC connection (aioquic, its CUBIC), for the lab's `quic`
workload: the QUIC counterpart of one iperf3 TCP flow.

    python -m braid.lab.quicperf server ADDR PORT TIMEOUT  (gateway namespace; one run)
    python -m braid.lab.quicperf client ADDR PORT SECONDS up|down   (site namespace)

The client opens one stream and names the direction. Up: it sends for SECONDS, the server
counts what arrives and answers with its counts. Down: the server sends for SECONDS, the
client counts. The receiver counts bytes per SAMPLE seconds from the first byte; the client
prints one JSON line: {"goodput_mbit": ..., "samples": [[t_end, mbit], ...],
"socket_drops": N}. A test tool: it accepts any certificate (a self-signed one is made at
start).

Both ends ask for SOCKET_BUFFER bytes of socket buffer, as QUIC stacks made for bulk do
(quic-go asks for 7 MB, and warns when it cannot have it): with the kernel's default of
about 200 kB, a burst of a few hundred datagrams (a tunnel's reorder buffer releasing what a
recovered loss held, a link's queue draining) overflowed this Python receiver's socket, and
QUIC read the overflow as the path's loss. `socket_drops` is that socket's overflow count at
the receiver (/proc/net/udp), so a run can tell the receiver's losses from the path's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from braid.io.udp import set_buffers

SAMPLE = 0.1
CHUNK = bytes(64 * 1024)
SEND_BUFFER = 1 << 20  # bytes the sender keeps written but not yet acknowledged, at most
WINDOW = 64 << 20  # flow-control windows: never the limit on a lab link (a satellite's BDP)
ALPN = ["braid-perf"]
SOCKET_BUFFER = 8 << 20


def _big_buffers(transport: Any) -> None:
    """Give the transfer's UDP socket SOCKET_BUFFER each way (past rmem_max: the lab runs as
    root)."""
    set_buffers(transport.get_extra_info("socket"), SOCKET_BUFFER)


def socket_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped for want of room in `sock`'s receive buffer."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if len(fields) > 12 and fields[9] == inode:
                    return int(fields[12])
    return 0


def _configuration(is_client: bool) -> Any:
    from aioquic.quic.configuration import QuicConfiguration

    return QuicConfiguration(is_client=is_client, alpn_protocols=ALPN,
                             congestion_control_algorithm="cubic", max_data=WINDOW,
                             max_stream_data=WINDOW, idle_timeout=30.0,
                             verify_mode=ssl.CERT_NONE if is_client else None)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "braid-lab")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Counter:
    """Bytes received per SAMPLE seconds, from the first byte."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.total = 0
        self.bins: list[int] = []

    def add(self, n: int) -> None:
        now = time.monotonic()
        if self.start is None:
            self.start = now
        index = int((now - self.start) / SAMPLE)
        while len(self.bins) <= index:
            self.bins.append(0)
        self.bins[index] += n
        self.total += n

    def report(self) -> dict[str, Any]:
        seconds = len(self.bins) * SAMPLE
        samples = [[round((i + 1) * SAMPLE, 3), b * 8 / SAMPLE / 1e6] for i, b in enumerate(self.bins)]
        return {"goodput_mbit": self.total * 8 / seconds / 1e6 if seconds else 0.0,
                "bytes": self.total, "samples": samples}


async def _send_for(protocol: Any, stream_id: int, seconds: float) -> None:
    """Keep the stream's send buffer about SEND_BUFFER full for `seconds`, then end it."""
    quic = protocol._quic
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stream = quic._streams.get(stream_id)
        sender = getattr(stream, "sender", None)
        buffered = sender._buffer_stop - sender._buffer_start if sender is not None else 0
        if buffered < SEND_BUFFER:
            quic.send_stream_data(stream_id, CHUNK)
            protocol.transmit()
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(0.002)
    quic.send_stream_data(stream_id, b"", end_stream=True)
    protocol.transmit()


def _protocol_class() -> Any:
    from aioquic.asyncio import QuicConnectionProtocol
    from aioquic.quic.events import StreamDataReceived

    class PerfProtocol(QuicConnectionProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.counter = Counter()
            self.header = b""
            self.direction: str | None = None
            self.done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self.is_server = False
            self.reply = b""  # the server's counts, for an upload
            self.sending: asyncio.Future[None] | None = None

        def quic_event_received(self, event: Any) -> None:
            if not isinstance(event, StreamDataReceived):
                return
            data = event.data
            if self.is_server and self.direction is None:
                self.header += data
                if b"\n" not in self.header:
                    return
                line, data = self.header.split(b"\n", 1)
                self.direction, seconds = line.decode().split()
                if self.direction == "down":
                    self.sending = asyncio.ensure_future(
                        _send_for(self, event.stream_id, float(seconds)))
            if self.is_server and self.direction == "up":
                self.counter.add(len(data))
                if event.end_stream:
                    self._quic.send_stream_data(event.stream_id, json.dumps(
                        self.received()).encode(), end_stream=True)
                    self.transmit()
            elif not self.is_server:
                if self.direction == "down":
                    self.counter.add(len(data))
                    if event.end_stream and not self.done.done():
                        self.done.set_result(self.received())
                else:
                    self.reply += data
                    if event.end_stream and not self.done.done():
                        self.done.set_result(json.loads(self.reply))

        def received(self) -> dict[str, Any]:
            transport: Any = self._transport
            sock = transport.get_extra_info("socket")
            return self.counter.report() | {"socket_drops": socket_drops(sock)}

    return PerfProtocol


async def _server(host: str, port: int, timeout: float) -> None:
    """Serve one transfer; exit once its client has closed the connection (or `timeout`)."""
    from aioquic.asyncio import serve

    protocols: list[Any] = []
    cls = _protocol_class()

    def create(*args: Any, **kwargs: Any) -> Any:
        proto = cls(*args, **kwargs)
        proto.is_server = True
        protocols.append(proto)
        return proto

    config = _configuration(is_client=False)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = _self_signed(Path(tmp))
        config.load_cert_chain(str(cert), str(key))
    server = await serve(host, port, configuration=config, create_protocol=create)
    _big_buffers(server._transport)
    print("ready", flush=True)
    end = time.monotonic() + timeout
    while not protocols and time.monotonic() < end:
        await asyncio.sleep(0.05)
    if protocols:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(protocols[0].wait_closed(), max(0.1, end - time.monotonic()))
    server.close()


async def _client(host: str, port: int, seconds: float, direction: str) -> dict[str, Any]:
    from aioquic.asyncio import connect

    async with connect(host, port, configuration=_configuration(is_client=True),
                       create_protocol=_protocol_class()) as connection:
        proto: Any = connection
        _big_buffers(proto._transport)
        proto.direction = direction
        stream_id = proto._quic.get_next_available_stream_id()
        proto._quic.send_stream_data(stream_id, f"{direction} {seconds}\n".encode())
        proto.transmit()
        if direction == "up":
            await _send_for(proto, stream_id, seconds)
        result: dict[str, Any] = await asyncio.wait_for(proto.done, seconds + 60)
        return result


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "server":
        asyncio.run(_server(argv[1], int(argv[2]), float(argv[3])))
        return 0
    if len(argv) == 5 and argv[0] == "client" and argv[4] in ("up", "down"):
        print(json.dumps(asyncio.run(_client(argv[1], int(argv[2]), float(argv[3]), argv[4]))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
