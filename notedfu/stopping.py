"""SIGINT and SIGTERM: the handlers only note the signal; the work stops where stopping is safe.

A handler that raises (``KeyboardInterrupt``) can land anywhere: in the middle
of handing the Notecard back, between a chunk and its journal entry, inside a
write to a stream. So notedfu's handlers do nothing but set a flag, and the
work looks at it where it may stop:

* :func:`check` — between requests to the card, while waiting for an answer,
  between stages, while watching a console — raises
  :class:`~notedfu.errors.Interrupted`, which unwinds through every ``finally``;
* :func:`sleep` — a wait that ends at once when a stop is requested;
* :func:`shielded` — inside it, checks do not raise: the hand-back of the card
  always runs to its end (and is confirmed with ``hub.get``);
* the flash of the target does not look at all when run by the agent: stopping
  half way would leave the board without firmware, so the agent stops at the
  next stage boundary instead.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from notedfu.errors import Interrupted

_stop = threading.Event()
_signal_name = ""
_local = threading.local()


def _on_signal(signum: int, frame: object) -> None:
    global _signal_name
    _signal_name = signal.Signals(signum).name
    _stop.set()


def install() -> None:
    """Route SIGINT and SIGTERM to the flag (in the main thread, before any work starts)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)


def requested() -> bool:
    """Whether a stop was asked for."""
    return _stop.is_set()


def reason() -> str:
    """What asked for the stop (``SIGTERM``, ``SIGINT``)."""
    return _signal_name or "a request"


def request(why: str = "a request") -> None:
    """Ask for a stop from code (the same as a signal)."""
    global _signal_name
    _signal_name = why
    _stop.set()


def _shield_depth() -> int:
    return getattr(_local, "depth", 0)


def check() -> None:
    """Raise :class:`Interrupted` if a stop was asked for, unless inside :func:`shielded`."""
    if _stop.is_set() and not _shield_depth():
        raise Interrupted(f"stopped by {reason()}")


def sleep(seconds: float) -> None:
    """Wait ``seconds``, or less if a stop is asked for (then :func:`check` raises)."""
    if _shield_depth():
        time.sleep(seconds)
        return
    _stop.wait(seconds)
    check()


@contextmanager
def shielded() -> Iterator[None]:
    """Work that must finish even after a stop was asked for (checks inside do not raise)."""
    _local.depth = _shield_depth() + 1
    try:
        yield
    finally:
        _local.depth -= 1
