"""Handshake DoS defence: WireGuard's mac1/mac2 and cookie reply (whitepaper section 5.4).

Every handshake message ends with mac1 and mac2 (16 bytes each):
  mac1 = BLAKE2s-128(key = BLAKE2s-256("mac1----" || receiver's static public key), msg up to mac1)
  mac2 = BLAKE2s-128(key = cookie, msg up to mac2), or zeros without a cookie
A gateway drops an initiation whose mac1 is wrong with one keyed hash (about a microsecond)
and before any Diffie-Hellman: only someone who knows its public key can make one. Under
load it also requires a valid mac2; an initiation without one gets a cookie reply instead of
a handshake:
  cookie = BLAKE2s-128(key = a secret rotated every COOKIE_SECRET_LIFE, the source address)
  reply  = XChaCha20-Poly1305(key = BLAKE2s-256("cookie--" || gateway's static public key),
                              random 24-byte nonce, cookie, associated data = the initiation's mac1)
so only a sender that receives at its source address learns the cookie, and a reply is
smaller than the initiation it answers (no amplification). A per-source-address token bucket
bounds the Diffie-Hellman work any one address can cause even with valid cookies.

XChaCha20-Poly1305 comes from PyNaCl (libsodium); `cryptography` has no XChaCha.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from .timers import COOKIE_SECRET_LIFE, COOKIE_USE_LIFE

MAC_LEN = 16
MACS_LEN = 2 * MAC_LEN
NONCE_LEN = 24
COOKIE_LEN = 16
ZERO_MAC = bytes(MAC_LEN)

Random = Callable[[int], bytes]
Address = tuple  # a socket address as the OS gives it


def _label_key(label: bytes, public: bytes) -> bytes:
    return hashlib.blake2s(label + public).digest()


def _mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, digest_size=MAC_LEN, key=key).digest()


def _address_bytes(addr: Address) -> bytes:
    return f"{addr[0]}|{addr[1]}".encode()


def with_macs(body: bytes, receiver_public: bytes, cookie: bytes | None) -> bytes:
    """A handshake message's body with mac1 and mac2 appended."""
    mac1 = _mac(_label_key(b"mac1----", receiver_public), body)
    mac2 = _mac(cookie, body + mac1) if cookie is not None else ZERO_MAC
    return body + mac1 + mac2


class MacChecker:
    """The receiver's side of mac1: checks messages sent to its own public key."""

    def __init__(self, own_public: bytes) -> None:
        self._mac1_key = _label_key(b"mac1----", own_public)

    def mac1_ok(self, message: bytes) -> bool:
        if len(message) < MACS_LEN:
            return False
        mac1 = message[-MACS_LEN:-MAC_LEN]
        return hmac.compare_digest(_mac(self._mac1_key, message[:-MACS_LEN]), mac1)


class CookieChecker(MacChecker):
    """The gateway's side: mac1, and mac2 against the cookie of the message's source."""

    def __init__(self, own_public: bytes, random: Random, now: float) -> None:
        super().__init__(own_public)
        self._random = random
        self._cookie_key = _label_key(b"cookie--", own_public)
        self._secret = random(32)
        self._secret_at = now

    def _cookie(self, addr: Address, now: float) -> bytes:
        if now - self._secret_at >= COOKIE_SECRET_LIFE:
            self._secret, self._secret_at = self._random(32), now
        return _mac(self._secret, _address_bytes(addr))

    def mac2_ok(self, message: bytes, addr: Address, now: float) -> bool:
        mac2 = message[-MAC_LEN:]
        expected = _mac(self._cookie(addr, now), message[:-MAC_LEN])
        return hmac.compare_digest(expected, mac2)

    def reply(self, message: bytes, addr: Address, now: float) -> tuple[bytes, bytes]:
        """(nonce, sealed cookie) answering `message` from `addr`."""
        nonce = self._random(NONCE_LEN)
        mac1 = message[-MACS_LEN:-MAC_LEN]
        sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(self._cookie(addr, now), mac1, nonce,
                                                            self._cookie_key)
        return nonce, sealed


@dataclass(slots=True)
class _Cookie:
    value: bytes
    received: float


class CookieJar:
    """The client's side: opens cookie replies, keeps one cookie per link (each link has its
    own source address), and puts mac2 on the initiations sent while it is fresh."""

    def __init__(self, gateway_public: bytes) -> None:
        self._public = gateway_public
        self._cookie_key = _label_key(b"cookie--", gateway_public)
        self._cookies: dict[int, _Cookie] = {}

    def seal(self, link_id: int, body: bytes, now: float) -> bytes:
        cookie = self._cookies.get(link_id)
        fresh = cookie is not None and now - cookie.received < COOKIE_USE_LIFE
        return with_macs(body, self._public, cookie.value if cookie is not None and fresh else None)

    def on_reply(self, link_id: int, sent: bytes, nonce: bytes, sealed: bytes, now: float) -> bool:
        """A cookie reply to the initiation `sent` on this link. True if it opened."""
        mac1 = sent[-MACS_LEN:-MAC_LEN]
        try:
            value = crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, mac1, nonce, self._cookie_key)
        except CryptoError:
            return False
        self._cookies[link_id] = _Cookie(value, now)
        return True


class RateLimiter:
    """Token bucket per key (a source address), with a fixed number of keys: when the table
    is full, entries idle long enough to have refilled are dropped first; if none is, a new
    key is refused (under such a flood a new source waits, no table grows)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[object, tuple[float, float]] = {}  # key -> (tokens, when)

    def allow(self, key: object, now: float) -> bool:
        entry = self._buckets.get(key)
        if entry is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
                if len(self._buckets) >= self.max_keys:
                    return False
            tokens = self.burst
        else:
            tokens = min(self.burst, entry[0] + (now - entry[1]) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def _prune(self, now: float) -> None:
        refill = self.burst / self.rate
        for key in [k for k, (_, t) in self._buckets.items() if now - t >= refill]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
