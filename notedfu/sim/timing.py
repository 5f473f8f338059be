"""The simulators' timing model: link profiles and a paced byte queue.

A simulated link moves bytes no faster than the wire would (``byte_seconds``
per byte) and the card takes time to think (``request_latency`` per request
plus ``read_seconds_per_kib`` per KiB it reads from its DFU storage). The same
numbers give the benchmark its lower bound, so measured ÷ bound is honest.
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
    request_latency: float = 0.050  # card time per request, seconds
    read_seconds_per_kib: float = 0.010  # card time per KiB read from DFU storage
    is_i2c: bool = False

    @property
    def byte_seconds(self) -> float:
        """Wire time of one byte."""
        return self.bits_per_byte / self.bits_per_second

    def wire_seconds(self, nbytes: int) -> float:
        """Wire time of ``nbytes`` bytes."""
        return nbytes * self.byte_seconds

    def card_seconds(self, read_bytes: int = 0) -> float:
        """The card's modeled time for one request that reads ``read_bytes``."""
        return self.request_latency + self.read_seconds_per_kib * read_bytes / 1024

    def with_overrides(self, **changes: float) -> "LinkProfile":
        """A copy with some numbers changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


PROFILES: dict[str, LinkProfile] = {
    "uart9600": LinkProfile("uart9600", 9600, 10),
    "aux115200": LinkProfile("aux115200", 115200, 10),
    # USB CDC has no baud rate; 12 Mbit/s full speed, framed like a UART byte.
    "usb": LinkProfile("usb", 12_000_000, 10),
    "i2c100k": LinkProfile("i2c100k", 100_000, 9, is_i2c=True),
    "i2c400k": LinkProfile("i2c400k", 400_000, 9, is_i2c=True),
}
"""Named link profiles; every one keeps the default card time (50 ms + 10 ms/KiB)."""


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

    def read(self, size: int, now: float) -> bytes:
        """Take up to ``size`` bytes that have arrived by ``now``."""
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

    def read(self, size: int, now: float) -> bytes:
        """Take up to ``size`` arrived bytes."""
        with self.lock:
            return self.output.read(size, now)

    def time_until(self, count: int, now: float) -> float | None:
        """Seconds until ``count`` bytes are readable, ``None`` if not queued."""
        with self.lock:
            return self.output.time_until(count, now)

    def reset_input(self) -> None:
        """The host flushed its input buffer: forget what is queued."""
        with self.lock:
            self.output.clear()
