"""Update files (``.ndfu``): a whole image compressed, or a delta against the image the device already has.

The user uploads an update file to Notehub instead of the ``.bin``; the agent
recognizes it after the download by its first eight bytes (never by its
name), rebuilds the image and checks it against the header before anything is
flashed. Layout (little-endian), format version 1::

    offset size
         0    8  magic b"NDFUPACK"
         8    1  format version (1)
         9    1  encoding: 0 raw image, 1 xz (LZMA2) image, 2 bsdiff4 delta against the base image
        10    2  header size (96 + info size; a reader skips what a later version adds before the payload)
        12    4  target image length
        16    4  target image CRC-32 (IEEE, as the Notecard computes it)
        20   16  target image MD5
        36   32  target image SHA-256 (what a signature over this header binds the image to)
        68    4  base image length (a delta; else 0)
        72   16  base image MD5 (a delta; else zeros)
        88    4  payload length
        92    2  info size
        94    2  reserved (0)
        96    …  info: the target image's ``firmware::info:{…}`` text as it stands in the image, so that
                 Notehub (and ``firmware_info``) read the version from the update file too
         …    …  payload
    then, optionally, the Ed25519 signature trailer of :mod:`notedfu.update.signature` over all of the above.

Why these libraries (measured on the sensor pair under ``firmware/`` as first
linked, 67,744 bytes, 2.0.0 → 2.0.1, on this machine): a full image with xz is
41,448 bytes (0.61), zlib -9 45,874, bz2 47,834. Deltas: bsdiff4 708 bytes;
detools (sequential, lzma) 643, (bz2) 600, (heatshrink) 1,509, in-place
963–2,757. (With the delta-friendly link the pair has now, bsdiff4's is 429.)
Applying a delta to a 1 MiB image costs 7 ms of CPU with either. detools is
made for devices that patch themselves in place, which the host does not
need; its last release is from 2023 and it brings six dependencies. bsdiff4 is
released in 2026, needs nothing else, and the 65 bytes it loses cost 0.07 s
on a 9600-baud link. So: ``lzma`` (the standard library) for whole images and
``bsdiff4`` for deltas.
"""

from __future__ import annotations

import hashlib
import lzma
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable

import bsdiff4

from notedfu.checksums import crc32, md5_hex
from notedfu.errors import IntegrityError
from notedfu.protocol.firmware import MARKER

MAGIC = b"NDFUPACK"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sBBHII16s32sI16sIHH")
HEADER_SIZE = _HEADER.size
MAX_IMAGE = 16 << 20  # larger than any STM32's flash: a length above it is a damaged or hostile header


class Encoding(IntEnum):
    """How the payload holds the target image."""

    RAW = 0
    XZ = 1
    BSDIFF4 = 2


class UpdateFileError(IntegrityError):
    """The update file is damaged, or rebuilds into something its header does not describe."""

    code = "E_UPDATE_FILE"
    permanent = True  # its bytes decide it: downloading it again gets the same bytes


class DeltaBaseError(IntegrityError):
    """A delta's base image is neither kept by the agent nor on the chip: it cannot be applied."""

    code = "E_DELTA_BASE"
    permanent = True


@dataclass(frozen=True)
class Header:
    """What an update file says about the image it rebuilds."""

    encoding: Encoding
    length: int
    crc32: int
    md5: str
    sha256: str
    base_length: int = 0
    base_md5: str = ""
    info: bytes = b""
    payload_offset: int = 0
    payload_length: int = 0

    @property
    def is_delta(self) -> bool:
        """Whether a base image is needed."""
        return self.encoding is Encoding.BSDIFF4


def is_update_file(data: bytes) -> bool:
    """Whether ``data`` is an update file (its header says so; a name says nothing)."""
    return data[:len(MAGIC)] == MAGIC


def _info_text(image: bytes) -> bytes:
    """The image's ``firmware::info:{…}`` text, up to its closing brace (empty if it has none)."""
    start = image.find(MARKER)
    end = image.find(b"}", start) if start >= 0 else -1
    return image[start:end + 1] if end >= 0 else b""


def pack(image: bytes, base: bytes | None = None, *, compress: bool = True) -> bytes:
    """An update file for ``image``: a delta against ``base`` if given, else the whole image (xz unless
    ``compress`` is false)."""
    if is_update_file(image) or (base is not None and is_update_file(base)):
        raise UpdateFileError("that is an update file already: pack the .bin images")
    if not image or len(image) > MAX_IMAGE:
        raise UpdateFileError(f"an image of {len(image)} bytes cannot be packed (1 to {MAX_IMAGE} bytes)")
    if base is not None:
        encoding, payload = Encoding.BSDIFF4, bsdiff4.diff(base, image)
    elif compress:
        encoding, payload = Encoding.XZ, lzma.compress(image, preset=9 | lzma.PRESET_EXTREME)
    else:
        encoding, payload = Encoding.RAW, image
    info = _info_text(image)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, encoding, HEADER_SIZE + len(info), len(image), crc32(image),
                          hashlib.md5(image).digest(), hashlib.sha256(image).digest(),
                          len(base) if base is not None else 0,
                          hashlib.md5(base).digest() if base is not None else bytes(16), len(payload), len(info), 0)
    return header + info + payload


def read_header(data: bytes) -> Header:
    """The header of the update file ``data`` (signature trailer already removed), checked for sense."""
    if len(data) < HEADER_SIZE or not is_update_file(data):
        raise UpdateFileError("not an update file (no NDFUPACK header)")
    (_, version, encoding, header_size, length, image_crc, md5, sha256, base_length, base_md5, payload_length,
     info_size, reserved) = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise UpdateFileError(f"update file format {version} is not known to this notedfu (it reads {FORMAT_VERSION})")
    if reserved:
        raise UpdateFileError(f"update file header's reserved field is {reserved:#06x}, not 0")
    if encoding not in iter(Encoding):
        raise UpdateFileError(f"update file encoding {encoding} is not known to this notedfu")
    delta = encoding == Encoding.BSDIFF4
    if not 0 < length <= MAX_IMAGE or delta != (base_length > 0) or base_length > MAX_IMAGE or \
            (not delta and base_md5 != bytes(16)):
        raise UpdateFileError(f"update file header describes an impossible image ({length} bytes, "
                              f"base {base_length} bytes, encoding {encoding})")
    if header_size < HEADER_SIZE + info_size or header_size + payload_length != len(data):
        raise UpdateFileError(f"update file is {len(data)} bytes; its header says {header_size} + {payload_length}")
    return Header(Encoding(encoding), length, image_crc, md5.hex(), sha256.hex(), base_length,
                  base_md5.hex() if base_length else "", data[HEADER_SIZE:HEADER_SIZE + info_size],
                  header_size, payload_length)


def unpack(data: bytes, base: Callable[[Header], bytes] | None = None) -> tuple[Header, bytes]:
    """The header and the image the update file ``data`` rebuilds, checked against the header's length,
    CRC-32, MD5, SHA-256 and version; ``base(header)`` gives a delta's base image (or raises
    :class:`DeltaBaseError`)."""
    header = read_header(data)
    payload = data[header.payload_offset:]
    try:
        if header.encoding is Encoding.RAW:
            image = payload
        elif header.encoding is Encoding.XZ:
            inflater = lzma.LZMADecompressor()
            image = inflater.decompress(payload, max_length=header.length + 1)  # bounded: no bomb
            if not inflater.eof:
                raise UpdateFileError(f"the compressed image does not end within the {header.length} bytes "
                                      "its header gives")
        else:
            image = _apply_delta(header, payload, base)
    except (lzma.LZMAError, ValueError, OSError) as exc:  # bsdiff4 and bz2 say ValueError/OSError
        raise UpdateFileError(f"the update file's payload is damaged ({exc})") from exc
    _check(header, image)
    return header, image


def _apply_delta(header: Header, patch: bytes, base: Callable[[Header], bytes] | None) -> bytes:
    # bsdiff4's BSDIFF40 header: magic, control and diff block lengths, new size (sign-magnitude int64).
    if len(patch) < 32 or patch[:8] != b"BSDIFF40":
        raise UpdateFileError("the delta is not a bsdiff4 patch")
    new_size = int.from_bytes(patch[24:32], "little")  # a set top bit (a negative size) never equals a length
    if new_size != header.length:  # checked before bsdiff4 allocates it
        raise UpdateFileError(f"the delta rebuilds {new_size} bytes; the header says {header.length}")
    if base is None:
        raise DeltaBaseError(f"the update file is a delta against image {header.base_md5}, and no base was given")
    old = base(header)
    if len(old) != header.base_length or md5_hex(old) != header.base_md5:
        raise DeltaBaseError(f"the delta's base is image {header.base_md5} ({header.base_length} bytes); "
                             f"the one given is {md5_hex(old)} ({len(old)} bytes)")
    return bsdiff4.patch(old, patch)


def _check(header: Header, image: bytes) -> None:
    """The rebuilt image against every figure of the header."""
    found = (len(image), crc32(image), md5_hex(image), hashlib.sha256(image).hexdigest(), _info_text(image))
    wanted = (header.length, header.crc32, header.md5, header.sha256, header.info)
    for what, got, want in zip(("length", "CRC-32", "MD5", "SHA-256", "firmware::info"), found, wanted):
        if got != want:
            raise UpdateFileError(f"the rebuilt image's {what} is {got!r}, the update file's header says {want!r}")
