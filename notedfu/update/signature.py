"""Ed25519 image signatures: a trailer appended to the image, never flashed.

A signed image is ``payload || signature (64 bytes) || payload length (u32 LE)
|| b"NDFUSIG1"``. The signature covers the whole payload — the
``firmware::info`` version marker included — so neither the code nor the
version it claims can be altered. The trailer goes to Notehub with the image
(its MD5 covers both); the agent checks it and flashes the payload only.

Keys are the ``cryptography`` package's Ed25519 keys: the private key is a PKCS#8
PEM file (mode 0600) that stays on the build machine, the public key is the
32 raw bytes in base64 that go into ``[policy] public_key``.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from notedfu.errors import SignatureError, UsageError

MAGIC = b"NDFUSIG1"
_TRAILER = struct.Struct("<64sI8s")
TRAILER_SIZE = _TRAILER.size


def split_signed(data: bytes) -> tuple[bytes, bytes | None]:
    """``(payload, signature)``; ``signature`` is ``None`` when there is no trailer."""
    if len(data) < TRAILER_SIZE:
        return data, None
    signature, length, magic = _TRAILER.unpack(data[-TRAILER_SIZE:])
    if magic != MAGIC or length != len(data) - TRAILER_SIZE:
        return data, None
    return data[:length], signature


def sign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    """``data`` with a fresh trailer (an existing one is replaced)."""
    payload, _ = split_signed(data)
    return payload + _TRAILER.pack(key.sign(payload), len(payload), MAGIC)


def verified_payload(data: bytes, public_key: Ed25519PublicKey | None) -> bytes:
    """The bytes to flash: trailer stripped, and checked when a key is configured."""
    payload, signature = split_signed(data)
    if public_key is None:
        return payload
    if signature is None:
        raise SignatureError("the image is not signed, and a public key is configured: refusing to flash it")
    try:
        public_key.verify(signature, payload)
    except InvalidSignature:
        raise SignatureError("the image's signature does not verify with the configured public key") from None
    return payload


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """Parse the base64 public key of ``[policy] public_key``."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise UsageError("policy.public_key: must be 32 bytes in base64, as `notedfu keygen` prints",
                         code="E_CONFIG")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The base64 public half of ``key``."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def generate_key(path: Path) -> str:
    """Write a new private key to ``path`` (0600, never overwritten); return its public key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists: not overwriting a key", code="E_KEY_EXISTS") from None
    except OSError as exc:
        raise UsageError(f"cannot write key {path}: {exc.strerror}", code="E_KEY") from exc
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return public_key_text(key)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a private key written by :func:`generate_key`."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise UsageError(f"cannot read key {path}: {exc.strerror}", code="E_KEY") from exc
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not an unencrypted PEM private key", code="E_KEY") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is not an Ed25519 key", code="E_KEY")
    return key
