"""TUN devices (layer 3, no packet info header)."""

from __future__ import annotations

import errno
import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65535


class TunGone(OSError):
    """The TUN device was deleted (`ip link del`): its file descriptor is dead."""


class Tun:
    """A TUN device opened non-blocking. It disappears (with its addresses and routes)
    when closed, since it is not made persistent."""

    def __init__(self, name: str) -> None:
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            ifr = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
            result = fcntl.ioctl(self.fd, TUNSETIFF, ifr)
        except OSError:
            os.close(self.fd)
            raise
        self.name = result[:16].rstrip(b"\x00").decode()

    def read_batch(self, limit: int = 64) -> list[bytes]:
        """Up to `limit` packets; raises TunGone if the device was deleted from outside."""
        out = []
        read = os.read
        for _ in range(limit):
            try:
                out.append(read(self.fd, MAX_PACKET))
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EBADFD, errno.EIO, errno.ENXIO):
                    raise TunGone(self.name) from exc
                raise
        return out

    def write(self, packet: bytes) -> bool:
        try:
            os.write(self.fd, packet)
            return True
        except OSError:  # EINVAL for a malformed packet, ENOBUFS under pressure
            return False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
