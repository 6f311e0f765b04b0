"""Our Noise IK against an independent implementation (the noiseprotocol package)."""

import os

import pytest
from noise.connection import Keypair, NoiseConnection

from braid.core import noise

NAME = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
PROLOGUE = b"braid/1"



def _their(role: str, static: bytes, remote: bytes | None) -> NoiseConnection:
    conn = NoiseConnection.from_name(NAME)
    conn.set_as_initiator() if role == "i" else conn.set_as_responder()
    conn.set_prologue(PROLOGUE)
    conn.set_keypair_from_private_bytes(Keypair.STATIC, static)
    if remote is not None:
        conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote)
    conn.start_handshake()
    return conn


def test_our_initiator_with_their_responder():
    i_s, r_s = os.urandom(32), os.urandom(32)
    e_pub, s_sealed, p_sealed, pending = noise.initiator_write(
        i_s, noise.public_key(r_s), os.urandom(32), b"hello", PROLOGUE)
    theirs = _their("r", r_s, None)
    assert theirs.read_message(e_pub + s_sealed + p_sealed) == b"hello"
    msg2 = bytes(theirs.write_message(b"back"))
    payload, keys = noise.initiator_read(pending, msg2[:32], msg2[32:])
    assert payload == b"back"
    assert keys.handshake_hash == theirs.get_handshake_hash()
    # transport: their first message decrypts with our receive key (nonce 0)
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    ct = theirs.encrypt(b"data")
    assert ChaCha20Poly1305(keys.recv).decrypt(noise.nonce(0), ct, b"") == b"data"
    ours = ChaCha20Poly1305(keys.send).encrypt(noise.nonce(0), b"up", b"")
    assert theirs.decrypt(ours) == b"up"


def test_their_initiator_with_our_responder():
    i_s, r_s = os.urandom(32), os.urandom(32)
    theirs = _their("i", i_s, noise.public_key(r_s))
    msg1 = bytes(theirs.write_message(b"payload-1"))
    read = noise.responder_read(r_s, msg1[:32], msg1[32:80], msg1[80:], PROLOGUE)
    assert read.payload == b"payload-1"
    assert read.remote_static == noise.public_key(i_s)
    e_pub, sealed, keys = noise.responder_write(read, os.urandom(32), b"p2")
    assert theirs.read_message(e_pub + sealed) == b"p2"
    assert keys.handshake_hash == theirs.get_handshake_hash()


def test_wrong_responder_key_fails_and_forged_response_leaves_state_usable():
    i_s, r_s, other = os.urandom(32), os.urandom(32), os.urandom(32)
    e_pub, s_sealed, p_sealed, pending = noise.initiator_write(
        i_s, noise.public_key(r_s), os.urandom(32), b"x", PROLOGUE)
    with pytest.raises(noise.HandshakeError):
        noise.responder_read(other, e_pub, s_sealed, p_sealed, PROLOGUE)
    read = noise.responder_read(r_s, e_pub, s_sealed, p_sealed, PROLOGUE)
    e2, sealed, _ = noise.responder_write(read, os.urandom(32), b"")
    with pytest.raises(noise.HandshakeError):
        noise.initiator_read(pending, e2, bytes(len(sealed)))
    _, keys = noise.initiator_read(pending, e2, sealed)  # the real one still completes
    assert len(keys.send) == 32
