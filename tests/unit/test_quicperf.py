"""The QUIC transfer tool's socket set-up: the receive buffer it asks for, and the
overflow count it reports (real loopback sockets)."""

import socket
from pathlib import Path

from braid.lab import quicperf


class _Transport:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str) -> socket.socket:
        assert name == "socket"
        return self.sock


def test_a_receiver_that_does_not_read_counts_what_its_socket_dropped():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        rx.bind(("127.0.0.1", 0))
        assert quicperf.socket_drops(rx) == 0
        for _ in range(200):
            tx.sendto(bytes(1200), rx.getsockname())
        assert quicperf.socket_drops(rx) > 100
    finally:
        rx.close()
        tx.close()


def test_the_transfer_socket_gets_a_buffer_far_above_the_default():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        default = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        quicperf._big_buffers(_Transport(sock))
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert got > default
        assert got >= min(quicperf.SOCKET_BUFFER, int(Path("/proc/sys/net/core/rmem_max").read_text()))
    finally:
        sock.close()
