"""The simulated Notecard's byte stream: line assembly, input buffer, paced output.

A ``CardPort`` turns bytes written by a host into request lines for
:class:`~notedfu.sim.notecard.NotecardSim` and queues the answers on a
:class:`~notedfu.sim.timing.PacedQueue` at the link's speed, after the card's
modeled think time. It is shared by the ``sim://`` URL handler, the pty server
and the simulated I2C bus, so all three behave alike.
"""

from __future__ import annotations

import threading

from notedfu.sim.card_config import INPUT_BUFFER, Reply
from notedfu.sim.notecard import NotecardSim
from notedfu.sim.timing import LinkProfile, PacedOutputMixin, PacedQueue

BURST_GAP = 0.1
"""A host pause this long lets the card empty its input buffer (segment pacing)."""

BINARY_TIMEOUT = 1.0
"""After ``card.binary.put``, a pause this long in the announced binary data abandons it."""


class CardPort(PacedOutputMixin):
    """One host connection to a simulated card, in wire time."""

    def __init__(self, card: NotecardSim, link: LinkProfile, *, paced_output: bool = True) -> None:
        self.card = card
        self.link = link
        self.clock = card.clock  # the servers carrying these bytes read the time from it
        # On I2C the bus itself charges wire time per transfer, so output is
        # released whole when the card is done thinking.
        self.output = PacedQueue(link.byte_seconds if paced_output else 0.0)
        self.lock = threading.RLock()
        self._line = bytearray()
        self._line_damaged = False
        self._burst = 0
        self._last_write = float("-inf")
        self._in_wire_free = 0.0
        self._card_free_at = 0.0
        self._binary_left = 0  # raw bytes still due after a card.binary.put
        self._binary = bytearray()
        self.bytes_in = 0
        self.bytes_out = 0
        self.overflows = 0

    @property
    def expecting_binary(self) -> bool:
        """Whether the next bytes are the binary data a ``card.binary.put`` announced."""
        return self._binary_left > 0

    def feed(self, data: bytes, now: float) -> None:
        """Bytes from the host, written at ``now``."""
        with self.lock:
            arrived = max(now, self._in_wire_free) + self.link.wire_seconds(len(data)) \
                if self.output.byte_seconds else now
            self._in_wire_free = arrived
            self.bytes_in += len(data)
            self.card.wire_bytes += len(data)
            if now - self._last_write > BURST_GAP:
                self._burst = 0
            if self._binary_left and now - self._last_write > BINARY_TIMEOUT:
                self._binary_left = 0  # the host gave up on the binary data it announced
                self.card.receive_binary(bytes(self._binary))
                self._binary.clear()
            self._last_write = now
            start = 0
            while start < len(data):
                if self._binary_left:
                    start = self._take_binary(data, start)
                    continue
                end = data.find(b"\n", start)
                piece = data[start:] if end < 0 else data[start:end]
                self._take(piece)
                if end < 0:
                    break
                self._complete(arrived)
                start = end + 1

    def _take_binary(self, data: bytes, start: int) -> int:
        """Raw bytes announced by ``card.binary.put``: they bypass the line buffer (the card DMAs them)."""
        piece = data[start:start + self._binary_left]
        self._binary += piece
        self._binary_left -= len(piece)
        if not self._binary_left:
            self.card.receive_binary(bytes(self._binary))
            self._binary.clear()
        return start + len(piece)

    def _take(self, piece: bytes) -> None:
        room = max(0, INPUT_BUFFER - self._burst)
        if len(piece) > room:
            # Bytes beyond the card's input buffer are lost, as on a real card
            # when a host sends a long request without segment pacing.
            self._line_damaged = True
            self.overflows += 1
        self._line += piece[:room]
        self._burst += len(piece)

    def _complete(self, at: float) -> None:
        line = bytes(self._line)
        damaged = self._line_damaged
        self._line.clear()
        self._line_damaged = False
        self._burst = 0  # the card takes the whole line out of its input buffer
        if damaged:
            self.card.warn(f"a request overran the card's {INPUT_BUFFER}-byte input buffer (no segment pacing)")
            reply = Reply(b'{"err":"serial input overrun {io}"}\r\n', self.card.request_latency)
        else:
            reply = self.card.handle(line, at)
            self._binary_left = reply.binary_follows
        if reply.restarted:
            self.output.clear()
            self._line.clear()
            self._card_free_at = at + reply.card_seconds
            return
        ready = max(at, self._card_free_at) + reply.card_seconds
        self._card_free_at = ready
        # Each line, and the binary data after an answer, is a message of its own: over I2C the
        # card reports what is left of the current message only (see notedfu.sim.i2c).
        for message in reply.data.splitlines(keepends=True) + ([reply.tail] if reply.tail else []):
            self.output.push(message, ready)
        self.bytes_out += len(reply.data) + len(reply.tail)
        self.card.wire_bytes += len(reply.data) + len(reply.tail)
