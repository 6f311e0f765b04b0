"""Noise_IK_25519_ChaChaPoly_BLAKE2s, exactly as the Noise Protocol Framework (rev 34) specifies.

Only the two messages of the IK pattern are implemented:
  <- s
  ...
  -> e, es, s, ss
  <- e, ee, se
Built from vetted primitives: X25519 and ChaCha20-Poly1305 from `cryptography`,
BLAKE2s and HMAC from the standard library. Tests cross-check this module against
an independent Noise implementation (the `noiseprotocol` package).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PROTOCOL_NAME = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
HASHLEN = 32
DHLEN = 32


class HandshakeError(ValueError):
    """A handshake message failed authentication or is malformed."""


def public_key(private: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def dh(private: bytes, public: bytes) -> bytes:
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(public)
        )
    except ValueError as exc:  # low-order point: the exchange yields all zeros
        raise HandshakeError("invalid public key") from exc
    return shared


def _hash(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2s).digest()


def hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    temp = _hmac(chaining_key, ikm)
    out1 = _hmac(temp, b"\x01")
    if outputs == 2:
        return out1, _hmac(temp, out1 + b"\x02")
    out2 = _hmac(temp, out1 + b"\x02")
    return out1, out2, _hmac(temp, out2 + b"\x03")


def nonce(n: int) -> bytes:
    return b"\x00\x00\x00\x00" + struct.pack("<Q", n)


class SymmetricState:
    """The Noise SymmetricState (with its CipherState folded in)."""

    def __init__(self) -> None:
        name = PROTOCOL_NAME
        self.h = name.ljust(HASHLEN, b"\x00") if len(name) <= HASHLEN else _hash(name)
        self.ck = self.h
        self.k: bytes | None = None
        self.n = 0

    def copy(self) -> SymmetricState:
        clone = SymmetricState.__new__(SymmetricState)
        clone.h, clone.ck, clone.k, clone.n = self.h, self.ck, self.k, self.n
        return clone

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = hkdf(self.ck, ikm, 2)
        self.k = temp_k[:32]
        self.n = 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        if self.k is None:
            ciphertext = plaintext
        else:
            ciphertext = ChaCha20Poly1305(self.k).encrypt(nonce(self.n), plaintext, self.h)
            self.n += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        if self.k is None:
            plaintext = ciphertext
        else:
            try:
                plaintext = ChaCha20Poly1305(self.k).decrypt(nonce(self.n), ciphertext, self.h)
            except InvalidTag as exc:
                raise HandshakeError("handshake message failed authentication") from exc
            self.n += 1
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        k1, k2 = hkdf(self.ck, b"", 2)
        return k1[:32], k2[:32]


@dataclass(frozen=True, slots=True)
class InitiatorPending:
    """State the initiator keeps between sending message 1 and receiving message 2."""

    state: SymmetricState
    ephemeral_private: bytes
    static_private: bytes
    remote_static: bytes


@dataclass(frozen=True, slots=True)
class Keys:
    send: bytes
    recv: bytes
    handshake_hash: bytes


def initiator_write(
    static_private: bytes, remote_static: bytes, ephemeral_private: bytes, payload: bytes,
    prologue: bytes,
) -> tuple[bytes, bytes, bytes, InitiatorPending]:
    """-> e, es, s, ss. Returns (ephemeral_pub, sealed_static, sealed_payload, pending)."""
    st = SymmetricState()
    st.mix_hash(prologue)
    st.mix_hash(remote_static)
    e_pub = public_key(ephemeral_private)
    st.mix_hash(e_pub)
    st.mix_key(dh(ephemeral_private, remote_static))
    sealed_static = st.encrypt_and_hash(public_key(static_private))
    st.mix_key(dh(static_private, remote_static))
    sealed_payload = st.encrypt_and_hash(payload)
    return e_pub, sealed_static, sealed_payload, InitiatorPending(
        st, ephemeral_private, static_private, remote_static
    )


@dataclass(frozen=True, slots=True)
class ResponderRead:
    """What the responder learned from message 1, before deciding to answer."""

    state: SymmetricState
    remote_static: bytes
    remote_ephemeral: bytes
    payload: bytes


def responder_read(
    static_private: bytes, ephemeral: bytes, sealed_static: bytes, sealed_payload: bytes,
    prologue: bytes,
) -> ResponderRead:
    st = SymmetricState()
    st.mix_hash(prologue)
    st.mix_hash(public_key(static_private))
    st.mix_hash(ephemeral)
    st.mix_key(dh(static_private, ephemeral))
    remote_static = st.decrypt_and_hash(sealed_static)
    st.mix_key(dh(static_private, remote_static))
    payload = st.decrypt_and_hash(sealed_payload)
    return ResponderRead(st, remote_static, ephemeral, payload)


def responder_write(
    read: ResponderRead, ephemeral_private: bytes, payload: bytes
) -> tuple[bytes, bytes, Keys]:
    """<- e, ee, se. Returns (ephemeral_pub, sealed_payload, keys)."""
    st = read.state.copy()
    e_pub = public_key(ephemeral_private)
    st.mix_hash(e_pub)
    st.mix_key(dh(ephemeral_private, read.remote_ephemeral))
    st.mix_key(dh(ephemeral_private, read.remote_static))
    sealed = st.encrypt_and_hash(payload)
    k_init, k_resp = st.split()
    return e_pub, sealed, Keys(send=k_resp, recv=k_init, handshake_hash=st.h)


def initiator_read(pending: InitiatorPending, ephemeral: bytes, sealed_payload: bytes
                   ) -> tuple[bytes, Keys]:
    st = pending.state.copy()  # a forged response must not spoil the pending state
    st.mix_hash(ephemeral)
    st.mix_key(dh(pending.ephemeral_private, ephemeral))
    st.mix_key(dh(pending.static_private, ephemeral))
    payload = st.decrypt_and_hash(sealed_payload)
    k_init, k_resp = st.split()
    return payload, Keys(send=k_init, recv=k_resp, handshake_hash=st.h)
