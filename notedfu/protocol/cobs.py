"""The Notecard's binary encoding: COBS with every byte XORed with ``\\n``.

XORing with the end-of-packet byte turns COBS's "no zero bytes" into "no
newline bytes", so binary data can ride on the Notecard's line protocol. The
COBS itself comes from the ``cobs`` package (C speed); ``bytes.translate``
does the XOR without a Python loop — note-python's pure-Python codec costs
several CPU seconds per MiB, which matters on a Pi Zero.
"""

from __future__ import annotations

from cobs import cobs

from notedfu.errors import CobsError

EOP = 0x0A  # the Notecard's end-of-packet byte, '\n'
_XOR_EOP = bytes(b ^ EOP for b in range(256))


def cobs_encode(data: bytes) -> bytes:
    """Encode ``data`` for the wire (no trailing newline)."""
    return cobs.encode(data).translate(_XOR_EOP)


def cobs_decode(encoded: bytes) -> bytes:
    """Decode wire bytes (without the trailing newline) back to data."""
    try:
        return cobs.decode(bytes(encoded).translate(_XOR_EOP))
    except cobs.DecodeError as exc:
        raise CobsError(str(exc)) from None
