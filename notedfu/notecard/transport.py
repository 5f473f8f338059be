"""Bytes to and from a Notecard: a serial port (pyserial) or serial-over-I2C (smbus2).

Both links offer the same small interface to the transaction layer
(:mod:`notedfu.notecard.client`): send a request line, read an answer line by
a deadline, read an announced number of binary bytes, drop stale input, and
the newline handshake that resynchronises host and card. They pace what they
write and how often they poll as Blues' own libraries do, because the
Notecard has no flow control (Blues staff, discuss.blues.io/t/929: "Both
serial and I2C are implemented with no flow control … hence the need for the
delays"):

* serial: requests in 250-byte segments with 250 ms between segments, none
  after the last (note-c ``_serialChunkedTransmit``);
* I2C (:class:`notedfu.notecard.i2c_link.I2CPacing`): ≤ 253-byte chunks (note-c ``NOTE_I2C_MAX_MAX``),
  6 ms before each chunk and 20 ms after it, 250 ms per 250-byte segment, and
  50 ms between "anything for me?" queries (note-c ``n_i2c.c``; note-python
  PR #79: faster polling put real cards into an error state).

What the card sends past the end of a line stays buffered for the next read
(:class:`LineBuffer`, shared by both links). This module holds the serial link.
"""

from __future__ import annotations

import time
from typing import Protocol

from notedfu import stopping
from notedfu.errors import LinkError, LinkIncomplete, LinkTimeout

SEGMENT_LENGTH = 250  # note-c CARD_REQUEST_SERIAL_SEGMENT_MAX_LEN / CARD_REQUEST_I2C_SEGMENT_MAX_LEN
SEGMENT_PAUSE = 0.250  # note-c CARD_REQUEST_*_SEGMENT_DELAY_MS
INTRA_LINE_TIMEOUT = 1.0  # note-c CARD_INTRA_TRANSACTION_TIMEOUT_SEC: a started line stalls this long → incomplete
RESET_TRIES = 10  # note-c CARD_RESET_SYNC_RETRIES
RESET_DRAIN = 0.5  # note-c CARD_RESET_DRAIN_MS: how long to listen for the echo of a newline
RESET_QUIET = 0.1  # after a clean "\r\n" echo, this long with nothing more is enough
# A card still waiting for the binary data a dead host announced (card.binary.put) takes each newline as
# data until the line has been quiet for its inter-byte timeout (note-c's is 1 s): pause longer than that.
SILENT_CARD_PAUSE = 1.2
SERIAL_READ_SLICE = 0.25  # longest single blocking serial read; deadlines are checked between reads
STREAM_SLEEP_MAX = 0.05  # < the 0.36 s a 4 KiB kernel tty buffer takes to fill at 115200 baud


class CardLink(Protocol):
    """What the transaction layer needs of a link to a Notecard."""

    name: str

    def send(self, data: bytes) -> None:
        """Write a request line, paced for the card."""

    def send_raw(self, data: bytes) -> None:
        """Write binary data the card announced it will take (``card.binary.put``)."""

    def read_line(self, deadline: float) -> bytes:
        """One line, terminator included; :class:`LinkTimeout` / :class:`LinkIncomplete`."""

    def read_exact(self, count: int) -> bytes:
        """Exactly ``count`` bytes the card announced."""

    def discard_input(self) -> int:
        """Drop what the card has sent and nobody read; return how many bytes."""

    def reset(self) -> None:
        """The newline handshake: afterwards the card has no half request and nothing is pending."""

    def close(self) -> None:
        """Release the port or bus."""


class LineBuffer:
    """Line assembly shared by both links: bulk reads, leftovers kept for the next read."""

    name = "Notecard"

    def __init__(self) -> None:
        self._pending = bytearray()

    def _read_some(self) -> bytes:  # pragma: no cover - each link provides it
        raise NotImplementedError

    def _take(self, count: int) -> bytes:
        """The first ``count`` bytes received (announced binary data), removed from the buffer."""
        data = bytes(self._pending[:count])
        del self._pending[:count]
        return data

    def _stalled(self, count: int) -> LinkIncomplete:
        return LinkIncomplete(f"{self.name}: binary data stopped after {len(self._pending)} of {count} bytes")

    def _take_line(self) -> bytes | None:
        end = self._pending.find(b"\n")
        if end < 0:
            return None
        line = bytes(self._pending[:end + 1])
        del self._pending[:end + 1]
        return line

    def read_line(self, deadline: float) -> bytes:
        """One newline-terminated line: the first byte by ``deadline``, the rest without a 1 s stall."""
        last_byte = time.monotonic()
        while (line := self._take_line()) is None:
            stopping.check()
            data = self._read_some()
            now = time.monotonic()
            if data:
                self._pending += data
                last_byte = now
            elif self._pending and now - last_byte > INTRA_LINE_TIMEOUT:
                raise LinkIncomplete(f"{self.name}: the answer stopped after {len(self._pending)} bytes "
                                     "(transaction incomplete)")
            elif not self._pending and now > deadline:
                raise LinkTimeout(f"{self.name}: no answer from the Notecard")
        return line

    def _echo_is_clean(self, window: float) -> bool:
        """After a bare newline: listen; clean when only CR/LF came back (note-c ``_serialNoteReset``)."""
        seen = bytearray()
        start = last_data = time.monotonic()
        while time.monotonic() - start < window:
            data = self._read_some()
            now = time.monotonic()
            if data:
                seen += data
                last_data = now
                if data.strip(b"\r\n"):
                    start = now  # the card is still talking: listen on
            elif seen and not seen.strip(b"\r\n") and now - last_data > RESET_QUIET:
                break
        self._pending.clear()
        return bool(seen) and not seen.strip(b"\r\n")


class SerialPort(Protocol):
    """What the serial link needs of a port (pyserial's ``Serial``)."""

    timeout: float | None
    in_waiting: int

    def read(self, size: int = 1) -> bytes: ...
    def write(self, data: bytes) -> int | None: ...
    def close(self) -> None: ...


class SerialLink(LineBuffer):
    """A Notecard on a serial port (USB CDC, the UART at 9600, or AUX)."""

    def __init__(self, port: SerialPort, name: str = "Notecard") -> None:
        super().__init__()
        self.port = port
        self.name = name
        port.timeout = SERIAL_READ_SLICE

    def send(self, data: bytes) -> None:
        """Write in 250-byte segments with 250 ms between them (the card's 1500-byte input buffer)."""
        for start in range(0, len(data), SEGMENT_LENGTH):
            if start:
                time.sleep(SEGMENT_PAUSE)
            self._write(data[start:start + SEGMENT_LENGTH])

    def send_raw(self, data: bytes) -> None:
        """Unpaced: the card takes announced binary data straight into its binary store."""
        self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except (OSError, ValueError) as exc:  # pyserial's SerialException is an OSError
            raise LinkError(f"{self.name}: write failed: {exc}", code="E_NOTECARD_IO") from exc

    def _read_some(self) -> bytes:
        # Blocks until at least one byte (or the slice ends), then takes all there is.
        try:
            return self.port.read(max(1, self.port.in_waiting))
        except (OSError, ValueError) as exc:
            raise LinkError(f"{self.name}: read failed: {exc}", code="E_NOTECARD_IO") from exc

    def read_exact(self, count: int) -> bytes:
        """``count`` bytes streaming in: sleep through most of each stretch instead of waking per byte.

        The rate is measured from the first byte on, so the card's think time
        before it does not make the read sleep longer than the data needs.
        """
        first_at = got_at_first = None
        last_byte = time.monotonic()
        while len(self._pending) < count:
            data = self._read_some()
            now = time.monotonic()
            if data:
                self._pending += data
                last_byte = now
                if first_at is None:
                    first_at, got_at_first = now, len(self._pending)
                elif now > first_at and len(self._pending) > got_at_first:
                    rate = (len(self._pending) - got_at_first) / (now - first_at)
                    time.sleep(min(0.5 * (count - len(self._pending)) / rate, STREAM_SLEEP_MAX))
            elif now - last_byte > INTRA_LINE_TIMEOUT:
                raise self._stalled(count)
        return self._take(count)

    def discard_input(self) -> int:
        """Drop leftovers and whatever has arrived unread."""
        dropped = len(self._pending)
        self._pending.clear()
        try:
            waiting = self.port.in_waiting
            if waiting:
                dropped += len(self.port.read(waiting))
        except (OSError, ValueError) as exc:
            raise LinkError(f"{self.name}: read failed: {exc}", code="E_NOTECARD_IO") from exc
        return dropped

    def reset(self) -> None:
        """note-c's handshake: a bare ``\\n`` until the card echoes only ``\\r\\n``."""
        pause = RESET_DRAIN
        for attempt in range(RESET_TRIES):
            if attempt:
                time.sleep(pause)
            self.discard_input()
            self._write(b"\n")
            if self._echo_is_clean(RESET_DRAIN):
                return
            pause = SILENT_CARD_PAUSE
        raise LinkError(f"{self.name}: the Notecard does not answer (no echo of a newline in {RESET_TRIES} tries)",
                        code="E_LINK_NO_ANSWER")

    def close(self) -> None:
        """Close the port."""
        self.port.close()
