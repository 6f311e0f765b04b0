"""UDP sockets: per-link client sockets bound to an interface or address, the gateway's listener."""

from __future__ import annotations

import ipaddress
import socket
import struct

BUFFER_BYTES = 4 << 20
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # kernel receive time, CLOCK_REALTIME
TIMESPEC = struct.Struct("@qq")
ANCILLARY = 128  # room for a timestamp and a packet-info control message


def enable_rx_timestamps(sock: socket.socket) -> None:
    """Have the kernel stamp each datagram with its arrival time (see `rx_stamp`): the
    delivery rates and one-way delays the estimator uses must not include the time a busy
    daemon took to read the datagram."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def rx_stamp(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's arrival time (wall clock seconds) among a datagram's control messages."""
    for level, kind, raw in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(raw)
            return sec + nsec * 1e-9
    return None


def resolve(host: str, port: int) -> tuple[int, tuple]:
    """(family, sockaddr) of the first UDP address for host:port."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    family, _, _, _, addr = infos[0]
    return family, addr


Remote = tuple[int, tuple]  # (address family, socket address) of the gateway


def resolve_all(endpoints: tuple[tuple[str, int], ...]) -> tuple[list[Remote], list[str]]:
    """Every UDP address of every endpoint (a name may have A and AAAA records), in the
    resolver's order, each once; and why each endpoint that did not resolve did not."""
    out: list[Remote] = []
    errors = []
    for host, port in endpoints:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            errors.append(f"{host}: {exc.strerror or exc}")
            continue
        for family, _, _, _, addr in infos:
            if (family, addr) not in out:
                out.append((family, addr))
    return out, errors


def family_of(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32  # Linux's; Python's socket module does not name them


def set_buffers(sock: socket.socket, size: int = BUFFER_BYTES) -> None:
    """`size` bytes of socket buffer each way: past rmem_max/wmem_max as root (the *BUFFORCE
    options), else as far as they allow."""
    for opt, force in ((socket.SO_RCVBUF, SO_RCVBUFFORCE), (socket.SO_SNDBUF, SO_SNDBUFFORCE)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)


def is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def link_socket(bind: str, family: int, remote: tuple, fwmark: int | None = None,
                device: str | None = None) -> socket.socket:
    """A connected, non-blocking UDP socket leaving through one uplink. `fwmark`: braid's
    own mark (SO_MARK), which full-tunnel routing lets out through the main table."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        set_buffers(sock)
        if fwmark is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, fwmark)
        if is_address(bind):
            if device:  # the interface holding the address: its routes, not the main default
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            sock.bind((bind, 0))
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, bind.encode())
        sock.connect(remote)
        enable_rx_timestamps(sock)
    except OSError:
        sock.close()
        raise
    return sock


def listen_socket(host: str, port: int) -> socket.socket:
    family, addr = resolve(host, port)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        set_buffers(sock)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


def recv_batch(sock: socket.socket, limit: int = 64) -> list[tuple[bytes, float | None]]:
    """Up to `limit` datagrams waiting on a client link's connected socket: (data, kernel
    arrival time or None). An ICMP error queued on the socket ends the batch."""
    out: list[tuple[bytes, float | None]] = []
    recvmsg = sock.recvmsg
    for _ in range(limit):
        try:
            data, ancdata, _, _ = recvmsg(65535, ANCILLARY)
        except OSError:  # BlockingIOError: nothing more; others: ICMP unreachable
            break
        out.append((data, rx_stamp(ancdata)))
    return out


IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python does not export it
IN_PKTINFO = struct.Struct("=i4s4s")  # ifindex, spec_dst, addr
IN6_PKTINFO = struct.Struct("=16si")  # addr, ifindex


class Listener:
    """The gateway's UDP socket. On a wildcard address it answers from the address each
    datagram was sent to (IP_PKTINFO / IPV6_PKTINFO), as a multihomed server must.
    Peer addresses are (sockaddr, local address bytes or None)."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = listen_socket(host, port)
        self.family = self.sock.family
        self.wildcard = ipaddress.ip_address(self.sock.getsockname()[0]).is_unspecified
        enable_rx_timestamps(self.sock)
        if self.wildcard:
            self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            if self.family == socket.AF_INET6:
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_batch(self, limit: int = 64) -> list[tuple[bytes, tuple, float | None]]:
        """Up to `limit` waiting datagrams: (data, peer, kernel arrival time or None)."""
        out: list[tuple[bytes, tuple, float | None]] = []
        recvmsg = self.sock.recvmsg
        wildcard = self.wildcard
        for _ in range(limit):
            try:
                data, ancdata, _, addr = recvmsg(65535, ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # an ICMP error queued on the socket
            local = None
            if wildcard:
                for level, kind, raw in ancdata:
                    if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(raw) >= IN_PKTINFO.size:
                        local = (socket.AF_INET, IN_PKTINFO.unpack_from(raw)[2])
                    elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(raw) >= 20:
                        local = (socket.AF_INET6, IN6_PKTINFO.unpack_from(raw)[0])
            out.append((data, (addr, local), rx_stamp(ancdata)))
        return out

    def send(self, data: bytes, peer: tuple) -> None:
        addr, local = peer
        if local is None:
            self.sock.sendto(data, addr)
        elif local[0] == socket.AF_INET:
            cmsg = IN_PKTINFO.pack(0, local[1], b"\x00" * 4)
            self.sock.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, cmsg)], 0, addr)
        else:
            cmsg = IN6_PKTINFO.pack(local[1], 0)
            self.sock.sendmsg([data], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, cmsg)], 0, addr)

    def close(self) -> None:
        self.sock.close()
