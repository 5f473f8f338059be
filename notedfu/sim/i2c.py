"""A simulated I2C bus with a Notecard on it, shaped like smbus2's ``SMBus``.

It implements the Notecard's serial-over-I2C protocol at the byte level:

* write ``[N, d0 … dN-1]`` — N request bytes for the card;
* write ``[0, N]`` then read ``N + 2`` bytes — ``[available, N, d0 … dN-1]``,
  where ``available`` counts what is still pending (``N = 0`` is the
  "anything for me?" query).

``available`` counts what is left of the *current message* only: an answer
line, or the binary data after a ``card.binary.get`` answer. The read that
takes the last byte of a line reports 0, and the next message shows up on
the next query. That is what Blues' own binary receive needs of a real card:
note-c's ``_i2cNoteTransaction`` reads the JSON answer "while available" and
then ``NoteBinaryStoreReceive`` queries afresh for the binary bytes; a card
that reported the binary bytes as available at the end of the answer line
would have them swallowed into the JSON (note-python's ``receive`` also reads
on while ``available > 0``).

Every transfer costs its wire time: START, the address byte and each data byte
at 9 bits, a repeated START per extra message, STOP (UM10204 §3.1), plus the
profile's clock stretching per byte the card sends. A message to another
address is NACKed with the ``OSError`` (EREMOTEIO) Linux gives.

Pacing. The card has no flow control; Blues documents what a host must leave
it (dev.blues.io "Notecard communication without a library" and the
serial-over-I2C guide): 20 ms after each chunk of a request, 250 ms after each
250-byte segment, ≥ 1 ms between transactions, and "a polling delay of 25ms".
The rules here are what Blues' own libraries actually leave, which is where
real cards are proven: note-c (``n_i2c.c``) and note-python sleep 5–6 ms
before and 20 ms after each request chunk and 250 ms per segment of a request;
they poll every 50 ms while waiting for an answer but every 20 ms while
draining during their reset handshake, so 20 ms is the shortest gap between
two polls with nothing written in between. Announced binary data and reads
while data is pending go back to back in both libraries, so those are exempt.
A host that leaves less is noted as a protocol warning on the card
(:meth:`NotecardSim.warn`); with ``strict_timing`` the transfer is also not
acknowledged, as a stressed card fails (note-python PR #79: polled too fast,
cards went into an error state).
"""

from __future__ import annotations

import ctypes
import errno
import threading
from typing import Any

from notedfu.sim.cardport import CardPort
from notedfu.sim.notecard import NotecardSim

NOTECARD_ADDRESS = 0x17
MAX_PACKET = 255  # one length byte; note-c uses 253, note-python 255
MAX_AVAILABLE = 253  # note-go and note-arduino reject a larger "available"
I2C_M_RD = 0x0001

# What Blues' libraries leave the card, seconds (see above).
MIN_BEFORE_WRITE = 0.001  # docs: "a minimum 1ms delay between transactions" (the libraries: 5-6 ms)
MIN_AFTER_CHUNK = 0.020  # docs: "Each chunk should observe a 20ms delay"; CARD_REQUEST_I2C_CHUNK_DELAY_MS
MIN_SEGMENT_PAUSE = 0.250  # docs: "Each segment requires a 250ms delay"; CARD_REQUEST_I2C_SEGMENT_DELAY_MS
SEGMENT_BYTES = 250  # CARD_REQUEST_I2C_SEGMENT_MAX_LEN
MIN_POLL_GAP = 0.020  # the reset drain of note-c and note-python (docs: 25 ms; in a transaction: 50 ms)
_TIMING_SLACK = 0.0005  # sleep()s return early by up to this much on Linux; do not count that


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
        self.nacks = 0
        self._last_end = float("-inf")  # when the previous transfer ended
        self._last_chunk_end = float("-inf")  # when the previous request chunk ended
        self._last_empty_poll = float("-inf")  # when the previous query that found nothing ended
        self._segment_bytes = 0  # request bytes since the last 250 ms pause

    def i2c_rdwr(self, *messages: Any) -> None:
        """Run smbus2 ``i2c_msg`` messages as one combined transaction."""
        with self._lock:
            start = self.card.clock()
            if any(m.addr != self.address for m in messages):
                self._occupy([0])
                raise OSError(errno.EREMOTEIO, "Remote I/O error")
            problem = self._pacing_problem(messages, start)
            if problem:
                self.card.warn(problem)
                if self.card.config.strict_timing:
                    self.nacks += 1
                    self._occupy([0])
                    raise OSError(errno.EREMOTEIO, "Remote I/O error")
            sent_by_card = 0
            for message in messages:
                self.transfers += 1
                if message.flags & I2C_M_RD:
                    sent_by_card += self._answer(message)
                else:
                    self._receive(bytes(message), start)
            self._occupy([m.len for m in messages], sent_by_card)

    def close(self) -> None:
        """Nothing to release."""

    # ------------------------------------------------------------ wire time
    def _occupy(self, lengths: list[int], sent_by_card: int = 0) -> None:
        """Hold the bus (and the caller) for the transaction's wire time."""
        clock = self.card.clock
        now = clock()
        self._bus_free_at = max(now, self._bus_free_at) + self.card.link.i2c_seconds(lengths, sent_by_card)
        delay = self._bus_free_at - now
        if delay > 0:
            clock.sleep(delay)
        self._last_end = clock()

    # ------------------------------------------------------------ pacing
    def _pacing_problem(self, messages: tuple[Any, ...], start: float) -> str:
        """What this transfer does that Blues' pacing rules forbid, or ``""``."""
        first = messages[0]
        if first.flags & I2C_M_RD or first.len < 2:
            return ""
        head = bytes(first)
        if head[0] == 0 and first.len == 2 and len(messages) > 1:  # [0, N] + read
            self._segment_bytes = 0  # reading an answer: the card has taken the whole request
            since_chunk = start - self._last_chunk_end
            if since_chunk < MIN_AFTER_CHUNK - _TIMING_SLACK:
                return (f"queried {since_chunk * 1000:.0f} ms after a request chunk "
                        f"(Blues: {MIN_AFTER_CHUNK * 1000:.0f} ms)")
            since_poll = start - self._last_empty_poll
            if head[1] == 0 and since_poll < MIN_POLL_GAP - _TIMING_SLACK:
                return f"polled {since_poll * 1000:.0f} ms after an empty poll (Blues: {MIN_POLL_GAP * 1000:.0f} ms)"
            return ""
        if self.port.expecting_binary:
            return ""  # announced binary data: Blues' libraries send it back to back
        gap, since_chunk = start - self._last_end, start - self._last_chunk_end
        if since_chunk >= MIN_SEGMENT_PAUSE - _TIMING_SLACK:
            self._segment_bytes = 0
        if self._segment_bytes > SEGMENT_BYTES:
            return (f"a request chunk {since_chunk * 1000:.0f} ms after {self._segment_bytes} request bytes "
                    f"(Blues: {MIN_SEGMENT_PAUSE * 1000:.0f} ms per {SEGMENT_BYTES}-byte segment)")
        if since_chunk < MIN_AFTER_CHUNK - _TIMING_SLACK:
            return f"a request chunk {since_chunk * 1000:.0f} ms after the previous one (Blues: " \
                   f"{MIN_AFTER_CHUNK * 1000:.0f} ms per chunk)"
        if gap < MIN_BEFORE_WRITE - _TIMING_SLACK:
            return f"a request chunk {gap * 1000:.1f} ms after the previous transfer (Blues: ≥ 1 ms)"
        return ""

    # ------------------------------------------------------------ protocol
    def _receive(self, data: bytes, start: float) -> None:
        if not data:
            return
        if data[0] == 0 and len(data) == 2:  # [0, N]: the host wants to read N bytes
            self._read_request = data[1]
            return
        count = data[0]
        if count != len(data) - 1:
            raise OSError(errno.EIO, "serial-over-I2C length byte does not match the write")
        if not self.port.expecting_binary:
            self._segment_bytes += count
            self._last_chunk_end = start + self.card.link.i2c_seconds([len(data)])
        self._last_empty_poll = float("-inf")  # a write between two polls: the next one is not a re-poll
        self.port.feed(data[1:], self.card.clock())

    def _answer(self, message: Any) -> int:
        want = self._read_request
        self._read_request = 0
        now = self.card.clock()
        if want + 2 > message.len or want > MAX_PACKET:
            raise OSError(errno.EIO, "read longer than the card offers")
        if want == 0:  # the query: what is left of the message at the head of the queue
            data, after = b"", self.port.in_current_message(now)
            if after == 0:
                self._last_empty_poll = now
        else:  # a read never runs past the end of the current message
            left = self.port.in_current_message(now)
            data = self.port.read(min(want, left), now, one_segment=True)
            after = left - len(data)
        reply = bytes([min(after, MAX_AVAILABLE), len(data)]) + data
        reply = reply.ljust(message.len, b"\0")
        ctypes.memmove(message.buf, reply, message.len)
        return len(data) + 2
