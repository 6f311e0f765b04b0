"""`braid keygen` and `braid pubkey`: X25519 keys, base64, as WireGuard prints them."""

from __future__ import annotations

import argparse
import base64
import os
import sys

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from braid.config import decode_key
from braid.core.noise import public_key


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keygen", help="a new private key (base64), printed or written to a file",
                       description="Make a new X25519 private key. With -o it is written to FILE, "
                       "created with mode 0600 (never readable by others); without, it is printed.")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the key to FILE (created 0600; an existing file is refused)")
    p.set_defaults(func=keygen)
    p = sub.add_parser("pubkey", help="read a private key on stdin, print its public key")
    p.set_defaults(func=pubkey)


def keygen(args: argparse.Namespace) -> int:
    raw = X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    text = base64.b64encode(raw).decode() + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        print(f"braid keygen: {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return 0


def pubkey(args: argparse.Namespace) -> int:
    try:
        private = decode_key(sys.stdin.read())
    except ValueError as exc:
        print(f"braid pubkey: stdin: private key {exc}", file=sys.stderr)
        return 2
    print(base64.b64encode(public_key(private)).decode())
    return 0
