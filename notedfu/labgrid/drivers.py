"""labgrid drivers over notedfu's clients: the Notecard's DFU side and the STM32 ROM bootloader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attr
from labgrid.driver.common import Driver
from labgrid.factory import target_factory
from labgrid.step import step

from notedfu.events import Events
from notedfu.notecard.dfu import Downloader, FetchOptions, FetchResult
from notedfu.notecard.link import open_notecard
from notedfu.notecard.staging import Staging
from notedfu.protocol.chips import FLASH_BASE
from notedfu.target.driver import TargetOptions
from notedfu.target.image import load_image
from notedfu.target.lines import ENTER_BOOTLOADER, RUN_APPLICATION
from notedfu.target.plan import FlashOptions
from notedfu.target.rom import RomBootloaderDriver

SERIAL_PORTS = {"RawSerialPort", "USBSerialPort", "NetworkSerialPort"}


def serial_spec(port: Any) -> str:
    """The notedfu spec (a device, or a pyserial URL) for a labgrid serial port resource. An exported port is
    reached the way labgrid's own SerialDriver reaches it: RFC 2217 with set-control ignored, or raw TCP."""
    if type(port).__name__ == "NetworkSerialPort":
        if getattr(port, "protocol", "rfc2217") == "rfc2217":
            return f"rfc2217://{port.host}:{port.port}?ign_set_control&timeout=3"
        return f"socket://{port.host}:{port.port}"
    return port.port


class _Output:
    """A labgrid digital output as a notedfu line (``set(active)``)."""

    def __init__(self, output: Any) -> None:
        self.output = output

    def set(self, active: bool) -> None:
        self.output.set(active)


@target_factory.reg_driver
@attr.s(eq=False)
class NotecardDFUDriver(Driver):
    """The Notecard's host-DFU side: what it offers, and the image downloaded, verified and staged."""

    bindings = {"port": SERIAL_PORTS}
    timeout = attr.ib(default=30.0, converter=float)

    @property
    def spec(self) -> str:
        """The ``--notecard`` spec for this port (what ``notedfu`` commands take)."""
        return serial_spec(self.port)

    @Driver.check_active
    @step()
    def status(self) -> dict[str, Any]:
        """``dfu.status`` and ``hub.get``: what the card offers and its mode."""
        client = open_notecard(self.spec, timeout=self.timeout)
        try:
            return {"dfu": client.request({"req": "dfu.status", "name": "user"}),
                    "hub": client.request({"req": "hub.get"})}
        finally:
            client.close()

    @Driver.check_active
    @step(args=["state_dir"])
    def fetch(self, state_dir: str | Path) -> FetchResult:
        """Download the offered image (resumable, verified) into ``state_dir``; the card is handed back."""
        client = open_notecard(self.spec, timeout=self.timeout)
        try:
            return Downloader(client, Staging(Path(state_dir)), Events(source="NOTECARD"), FetchOptions()).fetch()
        finally:
            client.close()


@target_factory.reg_driver
@attr.s(eq=False)
class STM32ROMDriver(Driver):
    """An STM32 through its ROM bootloader (AN3155) on a serial port; BOOT0 and NRST through labgrid outputs
    when bound, else notedfu line specs (``boot0``/``reset``: gpiochip0:17, rts, sim-gpio:…)."""

    bindings = {"port": SERIAL_PORTS,
                "boot0_output": {"DigitalOutputProtocol", None},
                "reset_output": {"DigitalOutputProtocol", None}}
    parity = attr.ib(default="even", validator=attr.validators.in_(["even", "none"]))
    baud = attr.ib(default=0, converter=int)
    boot0 = attr.ib(default="")
    reset = attr.ib(default="")

    @property
    def spec(self) -> str:
        """The ``--target`` spec for this port (``?parity=none`` where the line cannot carry parity)."""
        spec = serial_spec(self.port)
        if self.parity == "none":
            spec += ("&" if "?" in spec else "?") + "parity=none"
        return spec

    def target_options(self) -> TargetOptions:
        """How notedfu drives this board: the port's speed (or ``baud``), parity, and the lines."""
        lines = None
        if self.boot0_output is not None or self.reset_output is not None:
            lines = (_Output(self.boot0_output) if self.boot0_output else None,
                     _Output(self.reset_output) if self.reset_output else None)
        return TargetOptions(self.baud or getattr(self.port, "speed", None), self.boot0 or None, self.reset or None,
                             ENTER_BOOTLOADER, RUN_APPLICATION, self.parity, lines)

    def _driver(self) -> RomBootloaderDriver:
        return RomBootloaderDriver(self.spec, self.target_options())

    @Driver.check_active
    @step()
    def info(self) -> dict[str, Any]:
        """Enter the bootloader and identify the chip (``notedfu target info``); it stays in the bootloader."""
        with self._driver() as driver:
            driver.connect()
            return driver.describe()

    @Driver.check_active
    @step(args=["image"])
    def flash(self, image: str | Path, run: bool = True) -> dict[str, Any]:
        """Flash ``image`` (.bin at the flash base, .hex, .elf): only the pages that differ, verified; then start
        it unless ``run`` is false. Returns the flash report."""
        segments = load_image(image, FLASH_BASE)
        options = FlashOptions(run=run)
        with self._driver() as driver:
            driver.check(segments, options)
            driver.connect()
            return vars(driver.flash(segments, options))

    @Driver.check_active
    @step()
    def start(self) -> None:
        """Start the application in flash (BOOT0 low and a reset, or the bootloader's Go)."""
        with self._driver() as driver:
            driver.start()

    @Driver.check_active
    @step()
    def enter_bootloader(self) -> None:
        """Take the board into its bootloader and leave it there (lines wired), identified."""
        with self._driver() as driver:
            driver.connect()
