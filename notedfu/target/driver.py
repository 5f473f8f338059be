"""The one interface every way of flashing a target offers (labgrid's resource → driver → strategy).

A driver is made from a ``--target`` spec by :func:`notedfu.target.registry.target_driver`,
without touching anything; :meth:`TargetDriver.open` claims the port (or checks
the tool is there), :meth:`~TargetDriver.connect` talks to the chip, and the
rest is the same for the ROM bootloader (:mod:`notedfu.target.rom`) and the
external tools (:mod:`notedfu.target.backends`). ``notedfu flash``, ``notedfu
target info`` and the agent use only this interface; how the application is
started (BOOT0/NRST lines, the Go command or the tool's own reset) is decided in
one place, each driver's :meth:`~TargetDriver.start`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from notedfu.errors import UsageError
from notedfu.protocol.chips import FLASH_BASE
from notedfu.target.flasher import FlashReport
from notedfu.target.plan import FlashOptions, check_image
from notedfu.target.image import Segment
from notedfu.target.lines import ENTER_BOOTLOADER, RUN_APPLICATION

LARGEST_FLASH = 2 * 1024 * 1024
"""No STM32 has more flash than this: the bound for an image whose chip only the tool will learn."""


@dataclass
class TargetOptions:
    """How the target is wired (the ROM bootloader's lines; the tools drive their own)."""

    baud: int | None = None
    boot0: str | None = None  # line spec: rts, dtr, gpiochip0:17, !…, none
    reset: str | None = None
    enter: str = ENTER_BOOTLOADER
    run: str = RUN_APPLICATION
    parity: str | None = None  # "even" or "none" where the spec cannot say (a URL's query is its own)
    lines: tuple[Any, Any] | None = None  # BOOT0 and NRST as objects with set(active) (a labgrid output), not specs


class TargetDriver(ABC):
    """One target: made without I/O, opened explicitly, closed by ``with`` or :meth:`close`."""

    name: str = ""
    """"rom" for the ROM bootloader, else the tool's name."""
    reads_chip: bool = False
    """Whether it can read the chip: compare before writing, keep a last-known-good, roll back."""

    def __enter__(self) -> TargetDriver:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def open(self) -> None:
        """Claim what the target needs (its port and lock, or the tool); nothing is sent to the chip."""

    @abstractmethod
    def close(self) -> None:
        """Release what :meth:`open` claimed."""

    def connect(self) -> None:
        """Reach the chip's loader and learn what it is (the tools do this themselves, per command)."""

    def check(self, segments: list[Segment], options: FlashOptions) -> None:
        """The image checks that need no chip (it fits the largest STM32, starts at the base, can boot).

        Run before :meth:`open`; :meth:`flash` checks again against the chip it finds, when it can."""
        check_image(segments, FLASH_BASE, LARGEST_FLASH, options)

    @abstractmethod
    def flash(self, segments: list[Segment], options: FlashOptions) -> FlashReport:
        """Write ``segments`` (checked first; nothing is touched if they cannot be flashed), verify them,
        and start the application if ``options.run``."""

    @abstractmethod
    def start(self) -> None:
        """Start the application in flash: the only place that decides how."""

    def holds(self, segments: list[Segment], options: FlashOptions | None = None) -> bool | None:
        """Whether the chip already holds ``segments``; ``None`` when this driver cannot know."""
        return None

    def read_image(self) -> bytes | None:
        """The image in the chip's flash, or ``None`` when it cannot be read."""
        return None

    def vector_table_erased(self) -> bool | None:
        """After a failed flash: whether the first 8 bytes of flash are erased (the chip cannot boot a
        partial image); ``None`` when this driver cannot ask."""
        return None

    def unprotect(self, readout: bool, write: bool) -> None:
        """Lift readout/write protection (only the ROM bootloader can)."""
        raise UsageError(f"the {self.name} backend cannot unprotect the chip: use the tool itself first",
                         code="E_USAGE")

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the driver knows about the target, for ``notedfu target info`` and the results."""
