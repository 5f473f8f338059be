"""Gang flashing: one image onto several boards at once, each through its own driver and lines.

A production bench has one host and a row of boards. Every board is checked
before any is touched (its spec, lines and sequences, the image against its
driver); then up to ``jobs`` boards are flashed concurrently, each in a thread
of its own (the work is waiting on serial lines, not computing). Every event a
board's flash emits carries ``board``; one board's failure never stops the
others, and its result says whether its vector table is erased (so it will not
boot a partial image) when the bootloader can still be asked.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from notedfu.errors import NotedfuError, UsageError
from notedfu.events import Events, Sink
from notedfu.target.driver import TargetDriver, TargetOptions
from notedfu.target.image import Segment
from notedfu.target.plan import FlashOptions
from notedfu.target.registry import target_driver

OWN_PORT_LINES = ("rts", "dtr", "!rts", "!dtr", "none")
"""Line specs that name a wire of the board's own port: one such ``--boot0``/``--reset`` fits every board."""


@dataclass(frozen=True)
class Board:
    """One board of the row: its name (the target spec's device), spec and wiring."""

    name: str
    spec: str
    wiring: TargetOptions


@dataclass
class BoardResult:
    """How one board's flash ended."""

    board: str
    ok: bool = False
    chip: str = ""
    seconds: float = 0.0
    pages_written: int | None = None
    error: dict[str, str] = field(default_factory=dict)
    vector_table: str = ""  # after a failure: "erased" (will not boot a partial image), "intact", or "" (unknown)


def pair_lines(targets: list[str], lines: list[str] | None, option: str) -> list[str | None]:
    """One line spec per target: none given, one naming each board's own port wire, or one per target."""
    if not lines:
        return [None] * len(targets)
    if len(lines) == len(targets):
        return list(lines)
    if len(lines) == 1 and lines[0].lower() in OWN_PORT_LINES:
        return [lines[0]] * len(targets)
    raise UsageError(f"{option} was given {len(lines)} times for {len(targets)} targets: give it once per "
                     f"--target, in the same order (once only for a board's own {'/'.join(OWN_PORT_LINES[:2])} "
                     "wire)", code="E_BAD_SPEC")


def board_name(spec: str) -> str:
    """What a board is called in events and the table: its spec without options."""
    return spec.partition("?")[0]


def make_boards(targets: list[str], wiring: Callable[[int], TargetOptions]) -> list[Board]:
    """The row, each target's wiring from ``wiring(index)``; the same device twice is refused."""
    names = [board_name(t) for t in targets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"--target {', '.join(twice)} given more than once: one board per port", code="E_BAD_SPEC")
    return [Board(name, spec, wiring(i)) for i, (name, spec) in enumerate(zip(names, targets))]


class Gang:
    """Flashes one image onto a row of boards, ``jobs`` at a time; events go to ``sink`` with ``board``."""

    def __init__(self, boards: list[Board], sink: Sink, jobs: int = 0, source: str = "LOCAL") -> None:
        self.boards = boards
        self.jobs = max(1, min(jobs or len(boards), len(boards)))
        self.source = source
        self._sink = sink
        self._lock = threading.Lock()  # one event at a time on the shared stream

    def events(self, board: str | None = None) -> Events:
        """An event stream whose every event names ``board`` (none: the row as a whole)."""
        def sink(event: dict[str, Any]) -> None:
            with self._lock:
                self._sink({**event, "board": board} if board else event)

        return Events(sink, source=self.source)

    def drivers(self, segments: list[Segment], options: FlashOptions) -> list[TargetDriver]:
        """Every board's driver, each having checked the image: before any board is touched."""
        drivers = [target_driver(b.spec, b.wiring, self.events(b.name)) for b in self.boards]
        for board, driver in zip(self.boards, drivers):
            try:
                driver.check(segments, options)
            except NotedfuError as exc:
                raise type(exc)(f"{board.name}: {exc.message}", code=exc.code, permanent=exc.permanent) from exc
        return drivers

    def flash(self, segments: list[Segment], options: FlashOptions) -> list[BoardResult]:
        """Flash every board; the results in the boards' order."""
        drivers = self.drivers(segments, options)
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="notedfu-board") as pool:
            futures = [pool.submit(self._one, board, driver, segments, options)
                       for board, driver in zip(self.boards, drivers)]
            return [f.result() for f in futures]

    def _one(self, board: Board, driver: TargetDriver, segments: list[Segment],
             options: FlashOptions) -> BoardResult:
        result = BoardResult(board.name)
        events = self.events(board.name)
        started = time.monotonic()
        events.status("START")
        try:
            with driver:
                driver.connect()
                result.chip = driver.describe().get("chip", "")
                try:
                    report = driver.flash(segments, options)
                except NotedfuError:
                    result.vector_table = _vector_table(driver)
                    raise
            result.ok, result.pages_written = True, report.pages_written
        except NotedfuError as exc:  # an interrupt included: the other boards finish or stop on their own
            result.error = exc.as_dict()
        result.seconds = round(time.monotonic() - started, 3)
        if result.ok:
            events.status("SUCCESS", result=vars(result))
        else:
            events.status("FAILURE", error=result.error, result=vars(result))
        return result


def _vector_table(driver: TargetDriver) -> str:
    """After a failed flash: whether the chip's vector table is erased, asked of the bootloader if it answers."""
    try:
        erased = driver.vector_table_erased()
    except NotedfuError:
        return ""
    return "" if erased is None else "erased" if erased else "intact"
