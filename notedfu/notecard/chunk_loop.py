"""The one chunk loop both directions use: the download (``dfu.get``) and the side-load (``dfu.put``).

What each chunk is, the caller's ``step`` decides; how a failed chunk is treated
is decided here, once, for both:

- the card left DFU mode (``{dfu-not-ready}``, ``{dfu-mode-lost}``): enter it again
  and resend the chunk, within the retry budget;
- a garbled or lost answer, a chunk whose MD5 does not match, an I/O error: resend
  it, within the budget (the request layer has already retried the request);
- any other error the card states: raised at once (resending would not change it);
- :class:`Adjusted` from the step (it chose a smaller chunk or another encoding):
  the same offset again, not counted as a failure.

The cancel token is checked before every chunk, and the card's 15-minute DFU
timer renewed when it runs long.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from notedfu.errors import (BadResponseError, CardIO, CardRequestError, DfuModeLost, DfuNotReady, IntegrityError,
                            LinkError, NotedfuError)
from notedfu.events import Events
from notedfu.notecard.mode import CardMode


class Adjusted(Exception):
    """Raised by a step that changed how it moves chunks: send the same offset again, no failure counted."""


@dataclass
class ChunkLoop:
    """Moves ``length`` bytes from ``start``, one ``step(offset) -> bytes moved`` at a time."""

    events: Events
    mode: CardMode
    what: str  # the progress events' text, e.g. "reading the image from the Notecard"
    retries: int  # failed tries of one chunk before giving up
    enter_dfu: Callable[[], None]  # puts the card back in DFU mode after it left it
    check_cancelled: Callable[[], None] = lambda: None  # raises when the job is cancelled
    renew_seconds: float | None = None  # resend hub.set dfu when the mode is older than this
    retried: int = 0  # failed tries, all chunks together

    def run(self, start: int, length: int, step: Callable[[int], int]) -> None:
        """Call ``step`` until ``length`` bytes have moved; raise what cannot be retried."""
        offset, tries, t0 = start, 0, time.monotonic()
        while offset < length:
            self.check_cancelled()
            if self.renew_seconds is not None and time.monotonic() - self.mode.entered_at > self.renew_seconds:
                self.mode.set("dfu")  # restarts the card's 15-minute DFU timer
            try:
                offset += step(offset)
            except Adjusted:
                continue
            except (DfuModeLost, DfuNotReady) as exc:
                tries = self._failed(offset, exc, tries)
                self.events.message(f"the Notecard left DFU mode ({exc.err}): entering it again", "warning")
                self.enter_dfu()
                continue
            except CardRequestError as exc:
                if not isinstance(exc, CardIO):
                    raise
                tries = self._failed(offset, exc, tries)
                continue
            except (LinkError, IntegrityError, BadResponseError) as exc:
                tries = self._failed(offset, exc, tries)
                continue
            tries = 0
            elapsed = time.monotonic() - t0
            self.events.step("transfer", self.what, percent=100.0 * offset / length, done=offset, total=length,
                             rate=(offset - start) / elapsed if elapsed > 0 else None)

    def _failed(self, offset: int, exc: NotedfuError, tries: int) -> int:
        """Count one more failed try of the chunk at ``offset``; raise when the budget is spent."""
        tries += 1
        self.retried += 1
        if tries > self.retries:
            if isinstance(exc, (DfuModeLost, DfuNotReady)):
                raise exc
            kind, code = (LinkError, "E_NOTECARD_IO") if isinstance(exc, CardRequestError) else (type(exc), exc.code)
            raise kind(f"chunk at offset {offset}: {exc.message} ({self.retries} retries)", code=code) from exc
        if not isinstance(exc, (DfuModeLost, DfuNotReady)):
            self.events.message(f"chunk at offset {offset}: {exc.message}; retrying", "warning")
        return tries
