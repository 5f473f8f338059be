"""A simulated I2C bus with a Notecard on it, shaped like smbus2's ``SMBus``.

It implements the Notecard's serial-over-I2C protocol at the byte level:

* write ``[N, d0 … dN-1]`` — N request bytes for the card;
* write ``[0, N]`` then read ``N + 2`` bytes — ``[available, N, d0 … dN-1]``,
  where ``available`` counts what is still pending after this packet
  (``N = 0`` is the "anything for me?" query).

Every message costs its wire time (address byte + data, 9 bits each at the bus
clock), so the bus is as slow as the real one. A message to another address is
NACKed with the ``OSError`` (EREMOTEIO) Linux gives.
"""

from __future__ import annotations

import ctypes
import errno
import threading
import time
from typing import Any

from notedfu.sim.cardport import CardPort
from notedfu.sim.notecard import NotecardSim

NOTECARD_ADDRESS = 0x17
MAX_PACKET = 255  # one length byte; note-c uses 253, note-python 255
I2C_M_RD = 0x0001


class SimI2CBus:
    """An smbus2-compatible bus (``i2c_rdwr``) with one simulated Notecard."""

    def __init__(self, card: NotecardSim, address: int = NOTECARD_ADDRESS) -> None:
        self.card = card
        self.address = address
        self.port = CardPort(card, card.link, paced_output=False)
        self._read_request = 0
        self._bus_free_at = 0.0
        self._lock = threading.Lock()
        self.transfers = 0

    def i2c_rdwr(self, *messages: Any) -> None:
        """Run smbus2 ``i2c_msg`` messages as one combined transaction."""
        with self._lock:
            for message in messages:
                self._wire_time(1 + message.len)
                if message.addr != self.address:
                    raise OSError(errno.EREMOTEIO, "Remote I/O error")
                self.transfers += 1
                if message.flags & I2C_M_RD:
                    self._answer(message)
                else:
                    self._receive(bytes(message))

    def close(self) -> None:
        """Nothing to release."""

    def _wire_time(self, nbytes: int) -> None:
        now = time.monotonic()
        self._bus_free_at = max(now, self._bus_free_at) + self.card.link.wire_seconds(nbytes)
        delay = self._bus_free_at - now
        if delay > 0:
            time.sleep(delay)

    def _receive(self, data: bytes) -> None:
        if not data:
            return
        if data[0] == 0 and len(data) == 2:  # [0, N]: the host wants to read N bytes
            self._read_request = data[1]
            return
        count = data[0]
        if count != len(data) - 1:
            raise OSError(errno.EIO, "serial-over-I2C length byte does not match the write")
        self.port.feed(data[1:], time.monotonic())

    def _answer(self, message: Any) -> None:
        want = self._read_request
        self._read_request = 0
        now = time.monotonic()
        if want + 2 > message.len or want > MAX_PACKET:
            raise OSError(errno.EIO, "read longer than the card offers")
        data = self.port.read(want, now)
        after = min(self.port.available(now), MAX_PACKET - 2)
        reply = bytes([after, len(data)]) + data
        reply = reply.ljust(message.len, b"\0")
        ctypes.memmove(message.buf, reply, message.len)
