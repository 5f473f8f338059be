"""MD5 and CRC-32 as the Notecard computes them.

The Notecard's ``crc32`` (image metadata) and its request ``"crc"`` field are
both the IEEE CRC-32, which ``zlib.crc32`` computes in C everywhere; crcmod is
only needed for the STM32 CRC unit's MPEG-2 variant (:mod:`notedfu.protocol.an3155`).
"""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from zlib import crc32

__all__ = ["crc32", "file_digests", "is_md5", "md5_hex"]  # crc32(data, crc=0) -> int: the IEEE CRC-32, chainable


_MD5_HEX = re.compile(r"[0-9a-f]{32}")


def is_md5(text: object, *, any_case: bool = False) -> bool:
    """Whether ``text`` is an MD5 in hex: lower case as notedfu writes it, or either case (as a card may)."""
    return isinstance(text, str) and _MD5_HEX.fullmatch(text.lower() if any_case else text) is not None


def md5_hex(data: bytes) -> str:
    """Lower-case hex MD5 of ``data`` (the form the Notecard uses)."""
    return hashlib.md5(data).hexdigest()


def file_digests(stream: BinaryIO, length: int, block: int = 64 * 1024) -> tuple[str, int, int]:
    """Read up to ``length`` bytes of ``stream``; return (md5 hex, crc32, bytes read)."""
    md5 = hashlib.md5()
    crc = 0
    done = 0
    while done < length:
        data = stream.read(min(block, length - done))
        if not data:
            break
        md5.update(data)
        crc = crc32(data, crc)
        done += len(data)
    return md5.hexdigest(), crc, done
