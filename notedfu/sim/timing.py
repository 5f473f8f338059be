"""The simulators' timing model: link profiles and a paced byte queue.

A simulated link moves bytes no faster than the wire would and the card takes
time to think: ``request_latency`` per request, plus ``read_seconds_per_kib``
per KiB it reads from its DFU storage; after ``hub.set mode:dfu`` it needs
``ready_delay`` before ``dfu.get`` works. The same numbers give the benchmark
its lower bound, so measured ÷ bound is honest — about the model. The model
is only as good as its sources, cited for every figure below; where Blues
publishes no measurement, the figure says so.

Wire figures (not in doubt):

* UART: the Notecard's main UART is fixed at 9600 8N1 and AUX defaults to
  115200 (dev.blues.io "Notecard Interfaces"; notecard-schema ``card.aux.serial``
  ``rate``; Blues' python-dfu README: "115200 is only valid when using
  auxillary UART"): 10 bits per byte.
* USB: full-speed CDC, 12 Mbit/s; bulk transfers move far less than that, so
  the wire term is negligible either way.
* I2C: 100 kHz standard mode (the Notecard's "~100 kHz", dev.blues.io
  serial-over-I2C guide; 400 kHz works on some hosts, discuss.blues.io/t/295
  reports errors at 400K on an ESP32). A transfer costs a START bit, the
  address byte and every data byte at 9 bits (8 + ACK), a repeated START per
  extra message and a STOP bit (I2C-bus specification UM10204 §3.1).

Card figures:

* ``request_latency`` 0.05 s, ``read_seconds_per_kib`` 0.01 s (the default
  profiles): an assumption, not a measurement — Blues publishes none for a
  healthy card. It sits at twice the 25 ms polling delay Blues recommends
  for hosts (dev.blues.io "Notecard communication without a library").
* ``slowcard``: the slowest credible card. A Blues user measured "about 7
  seconds" per 4 KiB ``dfu.get`` over AUX at 115200 (discuss.blues.com/t/3433);
  the wire moves those 5.6 KB of base64 and JSON in 0.49 s, leaving ≈ 6.5 s of
  card time per 4 KiB: 1.6 s per KiB. DFU mode takes the documented 30 s to
  become active.
* ``ready_delay`` 5 s by default: Blues documents that DFU mode "may take up to
  30 seconds" to become active (dev.blues.io dfu.get reference) because the
  card powers its modem and external storage first (note-cli ``dfu.go``;
  note-c's fixture "DFU mode is not yet fully active: starting communications
  {wait-module} {connecting} {dfu-not-ready}"); 5 s is a typical figure, not a
  published one; ``slowcard`` takes the documented 30.
"""

from __future__ import annotations

import collections
import math
import threading
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class LinkProfile:
    """How fast one simulated link and the card behind it are."""

    name: str
    bits_per_second: float  # the line rate (UART baud or I2C clock)
    bits_per_byte: int  # 10 for 8N1 UART, 9 for I2C (8 data bits + ACK)
    request_latency: float = 0.050  # card time per request, seconds (an assumption: see above)
    read_seconds_per_kib: float = 0.010  # card time per KiB read from DFU storage (an assumption)
    ready_delay: float = 5.0  # DFU mode active this long after hub.set mode:dfu
    is_i2c: bool = False
    clock_stretch: float = 0.0  # I2C: seconds the card holds SCL low per byte it sends

    @property
    def byte_seconds(self) -> float:
        """Wire time of one byte."""
        return self.bits_per_byte / self.bits_per_second

    def wire_seconds(self, nbytes: int) -> float:
        """Wire time of ``nbytes`` bytes (UART framing, or I2C data bytes alone)."""
        return nbytes * self.byte_seconds

    def i2c_seconds(self, message_lengths: list[int], card_sends: int = 0) -> float:
        """Wire time of one combined I2C transaction: START, per message an address byte and
        its data (9 bits each), a repeated START between messages, STOP; plus clock stretching."""
        bits = 1 + sum(9 * (1 + length) for length in message_lengths) + (len(message_lengths) - 1) + 1
        return bits / self.bits_per_second + card_sends * self.clock_stretch

    def card_seconds(self, read_bytes: int = 0) -> float:
        """The card's modeled time for one request that reads ``read_bytes``."""
        return self.request_latency + self.read_seconds_per_kib * read_bytes / 1024

    def with_overrides(self, **changes: float) -> "LinkProfile":
        """A copy with some numbers changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


PROFILES: dict[str, LinkProfile] = {
    "uart9600": LinkProfile("uart9600", 9600, 10),
    "aux115200": LinkProfile("aux115200", 115200, 10),
    "usb": LinkProfile("usb", 12_000_000, 10),
    "i2c100k": LinkProfile("i2c100k", 100_000, 9, is_i2c=True),
    "i2c400k": LinkProfile("i2c400k", 400_000, 9, is_i2c=True),
    # The forum's 7 s per 4 KiB over AUX 115200, and the documented 30 s to enter DFU mode.
    "slowcard": LinkProfile("slowcard", 115200, 10, request_latency=0.050, read_seconds_per_kib=1.6,
                            ready_delay=30.0),
}
"""Named link profiles (see the module docstring for where each figure comes from)."""


def profile(name: str) -> LinkProfile:
    """Look up a profile by name, with a clear error for an unknown one."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown link profile {name!r} (known: {', '.join(PROFILES)})") from None


class PacedQueue:
    """Bytes that become readable one by one as the wire would deliver them.

    ``push`` schedules data to start no earlier than ``not_before`` and no
    earlier than the end of what is already queued (one wire, one direction).
    Byte ``k`` of a segment is readable at ``start + (k + 1) * byte_seconds``.
    Pure arithmetic on timestamps: no threads, no sleeping.
    """

    def __init__(self, byte_seconds: float) -> None:
        self.byte_seconds = byte_seconds
        self._segments: collections.deque[tuple[float, bytes]] = collections.deque()
        self._consumed = 0  # bytes already read from the first segment
        self.wire_free_at = 0.0

    def push(self, data: bytes, not_before: float) -> None:
        """Queue ``data`` to go out on the wire at ``not_before`` or later."""
        if not data:
            return
        start = max(not_before, self.wire_free_at)
        self._segments.append((start, bytes(data)))
        self.wire_free_at = start + len(data) * self.byte_seconds

    def clear(self) -> None:
        """Forget everything queued (the card restarted, the port closed)."""
        self._segments.clear()
        self._consumed = 0

    def _arrived(self, start: float, length: int, now: float) -> int:
        if self.byte_seconds <= 0:
            return length if now >= start else 0
        return max(0, min(length, math.floor((now - start) / self.byte_seconds + 1e-9)))

    def available(self, now: float) -> int:
        """How many bytes can be read at ``now``."""
        total = 0
        first = True
        for start, data in self._segments:
            arrived = self._arrived(start, len(data), now)
            if first:
                arrived -= self._consumed
                first = False
            total += arrived
            if arrived < len(data):
                break
        return total

    def pending(self) -> int:
        """Bytes queued, whether they have arrived yet or not."""
        return sum(len(d) for _, d in self._segments) - self._consumed

    def in_first_segment(self, now: float) -> int:
        """Arrived, unread bytes of the first queued segment (one message, on I2C)."""
        if not self._segments:
            return 0
        start, data = self._segments[0]
        return max(0, self._arrived(start, len(data), now) - self._consumed)

    def read(self, size: int, now: float, *, one_segment: bool = False) -> bytes:
        """Take up to ``size`` bytes that have arrived by ``now`` (from the first segment only, if asked)."""
        out = bytearray()
        while self._segments and len(out) < size:
            start, data = self._segments[0]
            arrived = self._arrived(start, len(data), now)
            take = min(arrived - self._consumed, size - len(out))
            if take <= 0:
                break
            out += data[self._consumed:self._consumed + take]
            self._consumed += take
            if self._consumed == len(data):
                self._segments.popleft()
                self._consumed = 0
                if one_segment:
                    break
            else:
                break
        return bytes(out)

    def time_until(self, count: int, now: float) -> float | None:
        """Seconds until ``count`` bytes are readable; ``None`` if never queued."""
        need = count
        first = True
        for start, data in self._segments:
            length = len(data) - (self._consumed if first else 0)
            skipped = self._consumed if first else 0
            first = False
            if need <= length:
                ready_at = start + (skipped + need) * self.byte_seconds
                return max(0.0, ready_at - now)
            need -= length
        return None


class PacedOutputMixin:
    """The read side of a simulated device: ``output`` (a :class:`PacedQueue`) under ``lock``."""

    output: PacedQueue
    lock: "threading.RLock"

    def available(self, now: float) -> int:
        """Bytes the host could read at ``now``."""
        with self.lock:
            return self.output.available(now)

    def read(self, size: int, now: float, *, one_segment: bool = False) -> bytes:
        """Take up to ``size`` arrived bytes (of the current message only, if asked)."""
        with self.lock:
            return self.output.read(size, now, one_segment=one_segment)

    def in_current_message(self, now: float) -> int:
        """Arrived, unread bytes of the message at the head of the queue."""
        with self.lock:
            return self.output.in_first_segment(now)

    def time_until(self, count: int, now: float) -> float | None:
        """Seconds until ``count`` bytes are readable, ``None`` if not queued."""
        with self.lock:
            return self.output.time_until(count, now)

    def reset_input(self) -> None:
        """The host flushed its input buffer: forget what is queued."""
        with self.lock:
            self.output.clear()
