"""The STM32 ROM bootloader's USART protocol (ST AN3155): frames, checksums and answers, pure.

Functions that build the exact bytes of each frame and parse the device's
answers, tested byte by byte. The client (:mod:`notedfu.target.an3155`) moves
them over a port; the emulator (:mod:`notedfu.sim.stm32`) parses and answers
the same frames.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import reduce

import crcmod.predefined

from notedfu.errors import TargetProtocolError

ACK, NACK, BUSY, SYNC = 0x79, 0x1F, 0x76, 0x7F


class Cmd:
    """Command codes."""

    GET = 0x00
    GET_VERSION = 0x01
    GET_ID = 0x02
    READ_MEMORY = 0x11
    GO = 0x21
    WRITE_MEMORY = 0x31
    ERASE = 0x43
    EXTENDED_ERASE = 0x44
    WRITE_PROTECT = 0x63
    WRITE_UNPROTECT = 0x73
    READOUT_PROTECT = 0x82
    READOUT_UNPROTECT = 0x92
    GET_CHECKSUM = 0xA1


MAX_BLOCK = 256
MASS_ERASE, BANK1_ERASE, BANK2_ERASE = 0xFFFF, 0xFFFE, 0xFFFD


# ------------------------------------------------------------------ frames (pure)
def xor(data: bytes | bytearray) -> int:
    """XOR of all bytes: the bootloader's checksum."""
    return reduce(lambda a, b: a ^ b, data, 0)


def command_frame(cmd: int) -> bytes:
    """A command byte and its complement."""
    return bytes([cmd, cmd ^ 0xFF])


def address_frame(address: int) -> bytes:
    """Four address bytes, MSB first, then their XOR."""
    raw = struct.pack(">I", address)
    return raw + bytes([xor(raw)])


def count_frame(count: int) -> bytes:
    """Read Memory's byte count: N = count - 1 and its complement."""
    if not 1 <= count <= MAX_BLOCK:
        raise ValueError(f"read count must be 1..{MAX_BLOCK}, not {count}")
    return bytes([count - 1, (count - 1) ^ 0xFF])


def data_frame(data: bytes) -> bytes:
    """Write Memory's payload: N = len - 1, the data, XOR of N and the data."""
    if not 1 <= len(data) <= MAX_BLOCK:
        raise ValueError(f"write block must be 1..{MAX_BLOCK} bytes, not {len(data)}")
    head = bytes([len(data) - 1]) + data
    return head + bytes([xor(head)])


def erase_frame(pages: list[int]) -> bytes:
    """Legacy Erase (0x43) page list: N = pages - 1, one byte per page, XOR."""
    if not 1 <= len(pages) <= 255 or any(not 0 <= p <= 0xFF for p in pages):
        raise ValueError("legacy erase takes 1..255 pages numbered 0..255")
    head = bytes([len(pages) - 1, *pages])
    return head + bytes([xor(head)])


def extended_erase_frame(pages: list[int] | None = None, special: int | None = None) -> bytes:
    """Extended Erase (0x44): a page list (2 bytes each, MSB first) or a special code."""
    if special is not None:
        raw = struct.pack(">H", special)
    else:
        if not pages or len(pages) > 0xFFF0:
            raise ValueError("extended erase takes at least one page")
        raw = struct.pack(f">H{len(pages)}H", len(pages) - 1, *pages)
    return raw + bytes([xor(raw)])


def length_frame(length: int) -> bytes:
    """Get Checksum's length: 4 bytes MSB first, then their XOR."""
    return address_frame(length)


_crc_mpeg = crcmod.predefined.mkPredefinedCrcFun("crc-32-mpeg")


def stm32_crc(data: bytes) -> int:
    """The STM32 CRC unit's CRC-32 (MPEG-2 over little-endian 32-bit words).

    ``data`` is padded to a whole word with 0xFF (what erased flash holds).
    """
    if len(data) % 4:
        data = data + b"\xff" * (4 - len(data) % 4)
    swapped = bytearray(len(data))
    swapped[0::4], swapped[1::4], swapped[2::4], swapped[3::4] = data[3::4], data[2::4], data[1::4], data[0::4]
    return _crc_mpeg(bytes(swapped))


@dataclass(frozen=True)
class BootloaderInfo:
    """What Get, Get Version and Get ID told us."""

    version: int  # e.g. 0x31 = protocol 3.1
    commands: tuple[int, ...]
    pid: int
    option_bytes: tuple[int, int] = (0, 0)

    @property
    def version_text(self) -> str:
        """``3.1`` for 0x31."""
        return f"{self.version >> 4}.{self.version & 0xF}"

    def supports(self, cmd: int) -> bool:
        """Whether the bootloader lists ``cmd``."""
        return cmd in self.commands


def parse_get(reply: bytes) -> tuple[int, tuple[int, ...]]:
    """The body of Get's answer (between the ACKs): N, version, N command codes."""
    if len(reply) < 2 or reply[0] + 1 != len(reply) - 1:
        raise TargetProtocolError(f"malformed Get answer {reply.hex(' ')}")
    return reply[1], tuple(reply[2:])
