"""The Notecard on serial-over-I2C (note-c ``n_i2c.c``): ``[N, data]`` writes, ``[0, N]`` queries, note-c's
pacing by default, and smbus2 (or any bus with its ``i2c_rdwr``) underneath."""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from typing import Any, Protocol

from notedfu.errors import LinkError
from notedfu.notecard.transport import (INTRA_LINE_TIMEOUT, RESET_DRAIN, RESET_TRIES, SEGMENT_LENGTH, SEGMENT_PAUSE,
                                        LineBuffer)

I2C_NACK_WAIT = 1.0  # note-c CARD_REQUEST_I2C_NACK_WAIT_MS: a card that NACKs is busy
I2C_MAX_TRANSFER = 253  # 255 minus the 2-byte header (note-c NOTE_I2C_MAX_MAX, note-go CardI2CMax)
@dataclass(frozen=True)
class I2CPacing:
    """How a host paces serial-over-I2C. The defaults are note-c's (``n_i2c.c``)."""

    io_gap: float = 0.001  # between any two bus transfers (dev.blues.io serial-over-I2C guide: "minimum 1ms")
    before_chunk: float = 0.006  # note-c _delayIO() before each request chunk ("instability in some cards")
    after_chunk: float = 0.020  # CARD_REQUEST_I2C_CHUNK_DELAY_MS, after every chunk, the last one included
    poll: float = 0.050  # between empty queries (note-c _i2cNoteQueryLength, note-python PR #79)


PACING = {
    "blues": I2CPacing(),
    # dev.blues.io "Notecard communication without a library": 20 ms per chunk, 250 ms per segment,
    # "a polling delay of 25ms", 1 ms between transactions: the least the card is documented to need.
    "docs": I2CPacing(before_chunk=0.001, poll=0.025),
}


class I2CBus(Protocol):
    """What the I2C link needs of a bus (smbus2's ``SMBus``)."""

    def i2c_rdwr(self, *msgs: Any) -> None: ...
    def close(self) -> None: ...


class I2CLink(LineBuffer):
    """A Notecard on serial-over-I2C: ``[N, data]`` writes, ``[0, N]`` → ``[available, N, data]`` reads."""

    def __init__(self, bus: I2CBus, address: int = 0x17, *, pacing: I2CPacing = PACING["blues"],
                 name: str = "Notecard") -> None:
        super().__init__()
        self.bus = bus
        self.address = address
        self.pacing = pacing
        self.name = name
        self._available = 0  # what the card said it still has, from the last read's header
        self._not_before = 0.0  # the next transfer waits until then

    # ------------------------------------------------------------ bus transfers
    def _wait(self, extra: float = 0.0) -> None:
        ready = max(self._not_before, time.monotonic() + extra)
        delay = ready - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _transfer(self, *messages: Any, gap_after: bool = True) -> None:
        self._wait()
        try:
            self.bus.i2c_rdwr(*messages)
        except OSError as exc:
            if exc.errno in (errno.EREMOTEIO, errno.ENXIO, errno.EIO):
                raise LinkError(f"{self.name}: the Notecard did not acknowledge on I2C ({exc.strerror})",
                                code="E_NOTECARD_IO") from exc
            raise LinkError(f"{self.name}: I2C transfer failed: {exc}", code="E_NOTECARD_IO") from exc
        finally:
            self._not_before = time.monotonic() + (self.pacing.io_gap if gap_after else 0.0)

    def _write_chunk(self, chunk: bytes) -> None:
        from smbus2 import i2c_msg

        self._transfer(i2c_msg.write(self.address, bytes([len(chunk)]) + chunk))

    def _read(self, length: int) -> bytes:
        """One ``[0, N]`` read; keeps the card's ``available``; returns the N data bytes."""
        from smbus2 import i2c_msg

        ask, answer = i2c_msg.write(self.address, bytes([0, length])), i2c_msg.read(self.address, length + 2)
        # While the card has data for us, Blues' libraries read on without a pause (note-c
        # _i2cChunkedReceive, note-python receive); every other transfer keeps the 1 ms gap.
        self._transfer(ask, answer, gap_after=length == 0)
        raw = bytes(answer)
        available, count = raw[0], raw[1]
        if count != length or available > I2C_MAX_TRANSFER:
            self._available = 0
            raise LinkError(f"{self.name}: bad serial-over-I2C header (asked {length}, got {count}, "
                            f"{available} available)", code="E_NOTECARD_IO")
        self._available = available
        return raw[2:]

    # ------------------------------------------------------------ link interface
    def send(self, data: bytes) -> None:
        """Chunks of ≤ 253 bytes paced as note-c paces them."""
        in_segment = 0
        for start in range(0, len(data), I2C_MAX_TRANSFER):
            chunk = data[start:start + I2C_MAX_TRANSFER]
            self._wait(self.pacing.before_chunk)
            self._write_chunk(chunk)
            in_segment += len(chunk)
            pause = self.pacing.after_chunk
            if in_segment > SEGMENT_LENGTH:
                in_segment, pause = 0, pause + SEGMENT_PAUSE
            self._not_before = time.monotonic() + pause
        self._available = 0

    def send_raw(self, data: bytes) -> None:
        """Announced binary data: ≤ 253-byte chunks, no pacing beyond the bus gap (note-c, note-python)."""
        for start in range(0, len(data), I2C_MAX_TRANSFER):
            self._write_chunk(data[start:start + I2C_MAX_TRANSFER])

    def _read_some(self) -> bytes:
        if self._available == 0:
            self._read(0)  # "anything for me?"
            if self._available == 0:
                self._not_before = max(self._not_before, time.monotonic() + self.pacing.poll)
                return b""
        return self._read(min(self._available, I2C_MAX_TRANSFER))

    def read_exact(self, count: int) -> bytes:
        """``count`` bytes, read as fast as the card offers them (note-c: no delay while data is available)."""
        last_byte = time.monotonic()
        while len(self._pending) < count:
            data = self._read_some()
            if data:
                self._pending += data
                last_byte = time.monotonic()
            elif time.monotonic() - last_byte > INTRA_LINE_TIMEOUT:
                raise self._stalled(count)
        return self._take(count)

    def discard_input(self) -> int:
        """Read and drop whatever the card holds for us now."""
        dropped = len(self._pending)
        self._pending.clear()
        for _ in range(1000):  # bounded: a card cannot have more than its buffers hold
            data = self._read(min(self._available, I2C_MAX_TRANSFER))
            dropped += len(data)
            if self._available == 0:
                break
        return dropped

    def reset(self) -> None:
        """note-c's handshake over I2C; a NACK means the card is busy: wait a second (note-c)."""
        for attempt in range(RESET_TRIES):
            if attempt:
                time.sleep(RESET_DRAIN)
            try:
                self.discard_input()
                self._wait(self.pacing.before_chunk)
                self._write_chunk(b"\n")
                self._not_before = time.monotonic() + self.pacing.after_chunk
                self._available = 0
                if self._echo_is_clean(RESET_DRAIN):
                    return
            except LinkError:
                time.sleep(I2C_NACK_WAIT)
        raise LinkError(f"{self.name}: the Notecard does not answer on I2C (no echo of a newline in "
                        f"{RESET_TRIES} tries)", code="E_LINK_NO_ANSWER")

    def close(self) -> None:
        """Close the bus."""
        close = getattr(self.bus, "close", None)
        if callable(close):
            close()


class Smbus2Adapter:
    """Lets stock note-python's ``OpenI2C`` (written for python-periphery) drive an smbus2 bus.

    Each transfer is one ``I2C_RDWR`` ioctl, so a query's write and read are
    joined by a repeated start, as the Notecard's serial-over-I2C expects.
    Used by the benchmark's peer and the interoperability tests.
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
