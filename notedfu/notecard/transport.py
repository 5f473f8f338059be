"""note-python transports without the dead time.

note-python owns the JSON transaction layer (request CRC and sequence
numbers, retries, the reset handshake); these subclasses replace only the
byte-moving parts that cost time on every request:

* ``OpenSerial.transmit`` sleeps 250 ms after *every* segment, the last one
  included, so each request pays a quarter second for nothing (note-c skips the
  delay after the last segment). We keep the 250-byte segments and the pause
  *between* them (the card's 1500-byte input buffer needs it) and drop the
  trailing one.
* ``OpenSerial`` polls for the answer every 10 ms and then reads it one byte at
  a time; we block in ``read`` (woken by the first byte) and read in bulk.
* ``OpenI2C`` sleeps 5 ms + 20 ms around every chunk and polls for the answer
  every 50 ms; we keep ≥ 1 ms between bus transfers (note-c issue #82) and
  poll every 5 ms. It also reads past the end of a line, which swallows the
  binary data that follows a ``card.binary.get`` answer; we stop at the line.

Both keep what they read past a line end for the next ``receive``.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import notecard
from notecard.notecard import (CARD_INTER_TRANSACTION_TIMEOUT_SEC, CARD_INTRA_TRANSACTION_TIMEOUT_SEC,
                               CARD_REQUEST_SEGMENT_DELAY_MS, CARD_REQUEST_SEGMENT_MAX_LEN,
                               CARD_REQUEST_I2C_CHUNK_DELAY_MS)

I2C_MAX_TRANSFER = 253  # 255 minus the 2-byte header (note-c NOTE_I2C_MAX_MAX)
I2C_IO_GAP = 0.001  # minimum pause before each bus transfer (note-c issue #82, note-go)
I2C_POLL = 0.005  # between "anything for me?" queries while the card thinks
SERIAL_READ_SLICE = 0.25  # longest single blocking read; deadlines are checked between reads
STREAM_SLEEP_MAX = 0.1  # < the time a 4 KiB kernel tty buffer takes to fill at 115200 baud


class _LineReceiver:
    """Line reading shared by both transports: bulk reads, leftovers kept."""

    _pending: bytearray
    transaction_timeout: float

    def _read_some(self) -> bytes:  # pragma: no cover - provided by the transport
        raise NotImplementedError

    def _take_line(self) -> bytes | None:
        end = self._pending.find(b"\n")
        if end < 0:
            return None
        line = bytes(self._pending[:end + 1])
        del self._pending[:end + 1]
        return line

    def receive(self, timeout_secs: float = CARD_INTRA_TRANSACTION_TIMEOUT_SEC, delay: bool = True) -> bytes:
        """Read one newline-terminated line; ``timeout_secs`` bounds the wait for its first byte."""
        deadline = time.monotonic() + timeout_secs
        while (line := self._take_line()) is None:
            data = self._read_some()
            if data:
                self._pending += data
                deadline = time.monotonic() + CARD_INTRA_TRANSACTION_TIMEOUT_SEC
            elif time.monotonic() > deadline:
                raise Exception("Timed out waiting to receive data from Notecard.")
        return line

    streams = False  # bytes keep arriving while we sleep (serial), or only when we read (I2C)

    def receive_count(self, count: int) -> bytes:
        """Exactly ``count`` bytes: binary data whose length the card announced.

        On a serial link the bytes stream in whether we look or not, so rather
        than waking for every byte (tens of CPU seconds per MiB at 9600 baud)
        we sleep for most of the time the rest needs at the rate seen so far.
        """
        start = time.monotonic()
        deadline = start + CARD_INTRA_TRANSACTION_TIMEOUT_SEC
        had = len(self._pending)
        while len(self._pending) < count:
            data = self._read_some()
            now = time.monotonic()
            if data:
                self._pending += data
                deadline = now + CARD_INTRA_TRANSACTION_TIMEOUT_SEC
                remaining, got = count - len(self._pending), len(self._pending) - had
                if self.streams and remaining > 0 and got > 0 and now > start:
                    time.sleep(min(0.8 * remaining * (now - start) / got, STREAM_SLEEP_MAX))
            elif now > deadline:
                raise Exception("Timed out waiting to receive binary data from Notecard.")
        data = bytes(self._pending[:count])
        del self._pending[:count]
        return data

    def _transaction_timeout_seconds(self, req: dict[str, Any]) -> float:
        """note-python's per-request timeout, capped by ours (tests and rigs shorten it)."""
        return min(super()._transaction_timeout_seconds(req), self.transaction_timeout)  # type: ignore[misc]

    def Reset(self) -> None:  # noqa: N802 - note-python's name
        """Forget leftovers, then note-python's newline handshake."""
        self._pending.clear()
        super().Reset()  # type: ignore[misc]


class SerialPort(Protocol):
    """What the serial transport needs of a port (pyserial's ``Serial``)."""

    timeout: float | None
    in_waiting: int

    def read(self, size: int = 1) -> bytes: ...
    def write(self, data: bytes) -> int | None: ...


class FastSerial(_LineReceiver, notecard.OpenSerial):
    """note-python's serial Notecard, minus the sleep after every request."""

    streams = True

    def __init__(self, port: SerialPort, *, timeout: float = CARD_INTER_TRANSACTION_TIMEOUT_SEC,
                 lock_path: str | None = None) -> None:
        self._pending = bytearray()
        self.transaction_timeout = timeout
        port.timeout = SERIAL_READ_SLICE
        super().__init__(port, lock_path=lock_path)

    def transmit(self, data: bytes, delay: bool = True) -> None:
        """Write ``data`` in 250-byte segments, pausing between segments only."""
        for start in range(0, len(data), CARD_REQUEST_SEGMENT_MAX_LEN):
            if start and delay:
                time.sleep(CARD_REQUEST_SEGMENT_DELAY_MS / 1000)
            self.uart.write(data[start:start + CARD_REQUEST_SEGMENT_MAX_LEN])

    def _read_some(self) -> bytes:
        # Blocks until at least one byte (or the slice ends), then takes all there is.
        return self.uart.read(max(1, self.uart.in_waiting))

    def _transact(self, req_bytes: bytes, rsp_expected: bool,
                  timeout_secs: float = CARD_INTER_TRANSACTION_TIMEOUT_SEC) -> bytes | None:
        self.transmit(req_bytes)
        if not rsp_expected:
            return None
        return self.receive(timeout_secs)

    def _available_default(self) -> bool:
        return bool(self._pending) or self.uart.in_waiting > 0

    def _read_byte(self) -> bytes:
        if self._pending:
            byte = bytes(self._pending[:1])
            del self._pending[:1]
            return byte
        return self.uart.read(1)


class I2CBus(Protocol):
    """What the I2C transport needs of a bus (smbus2's ``SMBus``)."""

    def i2c_rdwr(self, *msgs: Any) -> None: ...


class Smbus2Adapter:
    """Lets note-python's ``OpenI2C`` (written for python-periphery) drive an smbus2 bus.

    Each transfer is one ``I2C_RDWR`` ioctl, so a query's write and read are
    joined by a repeated start, as the Notecard's serial-over-I2C expects.
    """

    def __init__(self, bus: I2CBus) -> None:
        self.bus = bus

    def transfer(self, address: int, messages: list[Any]) -> None:
        """Run periphery-style ``I2C.Message`` objects as smbus2 ``i2c_msg``s."""
        from smbus2 import i2c_msg

        native = [i2c_msg.read(address, len(m.data)) if m.read else i2c_msg.write(address, bytes(m.data))
                  for m in messages]
        self.bus.i2c_rdwr(*native)
        for message, done in zip(messages, native):
            if message.read:
                message.data = bytes(done)


class FastI2C(_LineReceiver, notecard.OpenI2C):
    """note-python's serial-over-I2C Notecard with note-c's pacing instead of its own."""

    def __init__(self, bus: I2CBus, address: int = 0x17, *,
                 timeout: float = CARD_INTER_TRANSACTION_TIMEOUT_SEC) -> None:
        self._pending = bytearray()
        self._card_available = 0
        self.transaction_timeout = timeout
        super().__init__(Smbus2Adapter(bus), address, I2C_MAX_TRANSFER)

    def _read(self, length: int) -> tuple[int, bytearray]:
        time.sleep(I2C_IO_GAP)
        available, data = super()._read(length)
        self._card_available = available
        return available, data

    def _write(self, data: bytes) -> None:
        time.sleep(I2C_IO_GAP)
        super()._write(data)

    def transmit(self, data: bytes, delay: bool = True) -> None:
        """Write in ≤ 253-byte chunks; pause between chunks and segments, never after the last."""
        since_segment = 0
        for start in range(0, len(data), self.max):
            if start and delay:
                pause = CARD_REQUEST_I2C_CHUNK_DELAY_MS
                if since_segment >= CARD_REQUEST_SEGMENT_MAX_LEN:
                    pause, since_segment = CARD_REQUEST_SEGMENT_DELAY_MS, 0
                time.sleep(pause / 1000)
            chunk = data[start:start + self.max]
            self._write(chunk)
            since_segment += len(chunk)

    def _read_some(self) -> bytes:
        if self._card_available == 0:
            available, _ = self._read(0)
            if available == 0:
                time.sleep(I2C_POLL)
                return b""
        _, data = self._read(min(self._card_available, self.max))
        return bytes(data)

    def _transact(self, req_bytes: bytes, rsp_expected: bool,
                  timeout_secs: float = CARD_INTER_TRANSACTION_TIMEOUT_SEC) -> bytes | None:
        self.transmit(req_bytes)
        if not rsp_expected:
            return None
        self._card_available = 0
        return self.receive(timeout_secs)

    def Reset(self) -> None:  # noqa: N802 - note-python's name
        """Forget what the card said it had, then note-python's handshake."""
        self._card_available = 0
        super().Reset()
