"""The clocks the simulators run on: real time, or a test's clock that moves only when told.

A simulator and the servers that put it on a wire (:mod:`notedfu.sim.pty`, the
``sim://`` URL handler, the simulated I2C bus) take "now" from the device's
``clock`` and wait with its ``sleep``, so a test that gives a device a
:class:`ManualClock` says "0.15 s later" instead of sleeping and racing a
threshold on a busy machine (python-can's virtual bus has no time at all; ours
models wire time, so the time itself is what a test controls).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """``clock()`` is now, in seconds; ``clock.sleep(s)`` lets ``s`` seconds pass."""

    def __call__(self) -> float:
        """Now, in seconds."""

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass."""


class WallClock:
    """Real time (``time.monotonic``): what every simulator runs on unless told otherwise."""

    def __call__(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of real time."""
        time.sleep(seconds)


class ManualClock:
    """A clock that moves only when told (:meth:`advance`, or a simulator's own :meth:`sleep`)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """A simulator holding the caller for ``seconds`` (an I2C transfer): the time passes at once."""
        self.advance(max(0.0, seconds))


WALL = WallClock()
