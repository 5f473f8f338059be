"""A labgrid strategy for a Notecard + STM32 board: off, bootloader, application, updated."""

from __future__ import annotations

import enum
import tempfile
from pathlib import Path
from typing import Any

import attr
from labgrid.factory import target_factory
from labgrid.step import step
from labgrid.strategy.common import Strategy, StrategyError, never_retry


class Status(enum.Enum):
    """Where a test can put the board."""

    unknown = 0
    off = 1  # powered off (a power driver), else held in reset
    bootloader = 2  # in its ROM bootloader, identified
    application = 3  # running what its flash holds
    updated = 4  # running the image the Notecard offers: downloaded, verified, flashed (changed pages only)


@target_factory.reg_driver
@attr.s(eq=False)
class NotedfuStrategy(Strategy):
    """Moves a board between :class:`Status` states through notedfu's drivers."""

    bindings = {"notecard": "NotecardDFUDriver", "stm32": "STM32ROMDriver", "power": {"PowerProtocol", None}}
    status = attr.ib(default=Status.unknown)
    state_dir = attr.ib(default="")  # where "updated" stages the image (default: a temporary directory)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.last_update: dict[str, Any] = {}  # what "updated" fetched and what the flash did

    @never_retry
    @step(args=["status"])
    def transition(self, status: Status | str, *, step: Any) -> None:  # noqa: D102 (labgrid's signature)
        """Put the board in ``status``."""
        if not isinstance(status, Status):
            status = Status[status]
        if status == Status.unknown:
            raise StrategyError(f"can not transition to {status}")
        if status == self.status and status != Status.updated:
            step.skip("nothing to do")
            return
        if status == Status.off:
            if self.power is not None:
                self.target.activate(self.power)
                self.power.off()
            else:
                self.target.activate(self.stm32)
                self.stm32.enter_bootloader()  # no power switch: the board waits in its bootloader
        else:
            if self.power is not None:
                self.target.activate(self.power)
                self.power.on()
            self.target.activate(self.stm32)
            if status == Status.bootloader:
                self.stm32.enter_bootloader()
            elif status == Status.application:
                self.stm32.start()
            else:
                self._update()
        self.status = status

    def _update(self) -> None:
        self.target.activate(self.notecard)
        state = Path(self.state_dir or tempfile.mkdtemp(prefix="notedfu-lg-"))
        fetched = self.notecard.fetch(state)
        report = self.stm32.flash(fetched.path, run=True)
        self.last_update = {"md5": fetched.image.md5, "version": fetched.image.version, "path": str(fetched.path),
                            "pages_written": report["pages_written"], "pages_unchanged": report["pages_unchanged"]}
