"""The ROM-bootloader driver: a chip on a serial port, reached through its AN3155 bootloader.

Specs: a serial device (``/dev/ttyAMA0``, ``/dev/ttyUSB0?baud=57600``) or
``sim://stm32?…`` (the emulator). The line is 8E1 as AN3155 requires; ``?parity=none``
is for a line that cannot carry a parity bit (the emulator's pseudo-terminal says so). BOOT0/NRST lines, when wired, take the chip into
its bootloader and back to its application; without them the Go command starts it.
"""

from __future__ import annotations

import termios
import urllib.parse
import time
from pathlib import Path
from typing import Any

import serial

from notedfu.errors import UsageError
from notedfu.portlock import PortBusy, PortLock
from notedfu.ports import serial_for_url
from notedfu.events import Events
from notedfu.specs import parse_spec
from notedfu.errors import TargetError, TargetNack
from notedfu.protocol.an3155 import MAX_BLOCK, BootloaderInfo
from notedfu.target.an3155 import Bootloader
from notedfu.target.driver import TargetDriver, TargetOptions
from notedfu.protocol.chips import Chip, chip_for
from notedfu.target.flasher import Flasher, FlashReport
from notedfu.target.plan import FlashOptions, plan_flash
from notedfu.target.image import Segment
from notedfu.target.lines import LineControl, open_line

DEFAULT_BAUD = 115200
PARITIES = {"even": serial.PARITY_EVEN, "none": serial.PARITY_NONE}
SYNC_ROUNDS = 3  # syncs before a NACKed Get is believed
WRITE_TIMEOUT = 5.0  # a write that cannot drain this long: nothing reads the other end (no hang)


def _without_query_option(url: str, name: str) -> tuple[str, str]:
    """``url`` without the query option ``name``, and that option's (last) value."""
    base, _, query = url.partition("?")
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    value = [v for k, v in pairs if k == name][-1]
    rest = "&".join(k if not v else f"{k}={v}" for k, v in pairs if k != name)
    return (f"{base}?{rest}" if rest else base), value


def _is_pi_mini_uart(path: str) -> bool:
    try:
        model = Path("/proc/device-tree/model").read_text(errors="ignore")
    except OSError:
        return False
    return "Raspberry Pi" in model and Path(path).resolve().name == "ttyS0"


class RomBootloaderDriver(TargetDriver):
    """One chip's ROM bootloader on a serial port."""

    name = "rom"
    reads_chip = True

    def __init__(self, spec: str, options: TargetOptions | None = None, events: Events | None = None) -> None:
        self.spec = spec
        self.options = options or TargetOptions()
        self.events = events or Events(source="LOCAL")
        parsed = parse_spec(spec)
        self.device = parsed.device
        url = bool(parsed.scheme)  # a URL's query is the URL's own (sim://stm32?baud= is the modeled rate) …
        url_parity = None
        if url and "parity" in parsed.options:  # … but for parity: notedfu's, taken out before pyserial sees it
            self.device, url_parity = _without_query_option(parsed.device, "parity")
        self.baud = self.options.baud or (None if url else parsed.int_option("baud")) or DEFAULT_BAUD
        parity = self.options.parity or url_parity or ("even" if url else parsed.choice("parity", tuple(PARITIES),
                                                                                         "even"))
        if parity not in PARITIES:
            raise UsageError(f"target {spec!r}: parity={parity!r}: use even or none", code="E_BAD_SPEC")
        self.parity = PARITIES[parity]
        self.info: BootloaderInfo | None = None
        self.chip: Chip | None = None
        self.flash_size = 0
        self.protected = False

    def open(self) -> None:
        """Claim the port: the per-port lock (naming the holder) shared with every notedfu, and the device
        itself opened exclusive against other programs; the BOOT0/NRST lines."""
        target = self.device
        if _is_pi_mini_uart(target):
            raise UsageError(f"{target} is the Pi's mini UART, which has no parity: the STM32 bootloader needs "
                             "8E1. Use /dev/ttyAMA0 (dtoverlay=disable-bt or miniuart-bt).", code="E_MINI_UART")
        self.lock = PortLock(target, "target").acquire()
        device_options: dict[str, Any] = {} if "://" in target else {"exclusive": True}
        if not target.startswith("rfc2217://"):  # pyserial's RFC 2217 client has no write timeout (its own: ?timeout=)
            device_options["write_timeout"] = WRITE_TIMEOUT
        port = None
        try:
            self.port = port = serial_for_url(target, baudrate=self.baud, parity=self.parity,
                                       stopbits=serial.STOPBITS_ONE, bytesize=serial.EIGHTBITS, timeout=1,
                                       **device_options)
            # Every timeout change re-applies the line settings: a port that cannot keep even parity (a pty
            # on recent kernels: EINVAL) says so here, not as an internal error in the middle of a sync.
            self.port.timeout = 0.5
            self.port.timeout = 1
        except termios.error as exc:
            if port is not None:
                port.close()
            self.lock.release()
            line = "8E1" if self.parity == serial.PARITY_EVEN else "8N1"
            raise TargetError(f"cannot set {target} to {line}: {exc} (a line that carries no parity bit, like a "
                              f"pseudo-terminal, needs {target}?parity=none)", code="E_TARGET_OPEN") from exc
        except (serial.SerialException, ValueError, OSError) as exc:
            self.lock.release()
            if "exclusively" in str(exc) or getattr(exc, "errno", None) == 11:
                raise PortBusy(f"target {target} is open in another program (not notedfu): {exc}") from exc
            raise TargetError(f"cannot open target {target!r}: {exc}", code="E_TARGET_OPEN") from exc
        boot0, reset = self.options.lines or (open_line(self.options.boot0, self.port),
                                              open_line(self.options.reset, self.port))
        self.lines = LineControl(boot0, reset, self.options.enter, self.options.run)
        self.bootloader = Bootloader(self.port)

    def close(self) -> None:
        """Release the port and its lock."""
        try:
            self.port.close()
        finally:
            self.lock.release()

    def connect(self) -> BootloaderInfo:
        """Enter the bootloader (if lines are wired), sync, and identify the chip."""
        if self.lines.wired:
            self.lines.play(self.options.enter)
        for attempt in range(SYNC_ROUNDS):
            self.bootloader.sync()
            try:
                self.info = info = self.bootloader.info()
                break
            except TargetNack:
                # The first command after a sync NACKed: the bootloader still held a byte of a pair (a late
                # answer to a dead host's half frame was taken for the realignment's). A sync completes the
                # pair; only a chip that keeps refusing Get is an error.
                if attempt == SYNC_ROUNDS - 1:
                    raise
        self.chip = chip_for(info.pid)
        if self.chip is None:
            raise TargetError(f"unknown chip id 0x{info.pid:03x}: not in notedfu's chip table",
                              code="E_UNKNOWN_CHIP")
        self.flash_size = self._read_flash_size()
        return info

    def _read_flash_size(self) -> int:
        """Flash size from the device's register, else the table's (readout protection hides it)."""
        assert self.chip is not None
        register = self.chip.family.flash_size_register
        if register is None:
            return self.chip.flash_size
        size = self.chip.family.size_read_block  # F4 answers only whole aligned 256-byte blocks
        block = register - register % size if size > 2 else register
        try:
            data = self.bootloader.read_memory(block, size)
        except TargetNack:
            self.protected = True  # Read Memory NACKed while Get worked: readout protection
            return self.chip.flash_size
        kib = int.from_bytes(data[register - block:register - block + 2], "little")
        return kib * 1024 if 0 < kib <= 8192 else self.chip.flash_size

    def describe(self) -> dict[str, Any]:
        """What ``notedfu target info`` prints."""
        assert self.info is not None and self.chip is not None
        return {"chip": self.chip.name, "pid": f"0x{self.info.pid:03x}", "family": self.chip.family.name,
                "bootloader": self.info.version_text,
                "commands": [f"0x{c:02x}" for c in self.info.commands],
                "crc_command": self.info.supports(0xA1), "flash_base": f"0x{self.chip.flash_base:08x}",
                "flash_size": self.flash_size, "pages": len(self.chip.pages(self.flash_size)),
                "readout_protected": self.protected, "quirks": list(self.chip.family.quirks)}

    def unprotect(self, readout: bool, write: bool) -> None:
        """Lift protections (opt-in only: readout unprotect MASS-ERASES the chip)."""
        if readout:
            self.events.message("readout unprotect: the chip mass-erases itself", "warning")
            self.bootloader.readout_unprotect()
            self._after_reset()
        if write:
            self.bootloader.write_unprotect()
            self._after_reset()

    def _after_reset(self) -> None:
        time.sleep(0.1)
        if self.lines.wired:
            self.lines.play(self.options.enter)
        self.bootloader.sync()
        self.protected = False

    def flash(self, segments: list[Segment], options: FlashOptions) -> FlashReport:
        """Plan (refusing bad images before touching flash), flash, verify, start."""
        assert self.info is not None and self.chip is not None
        if self.protected:
            raise TargetError("the chip is readout-protected: flashing needs --readout-unprotect, which "
                              "mass-erases it", code="E_TARGET_PROTECTED")
        plan = plan_flash(segments, self.chip, self.flash_size, options)
        report = Flasher(self.bootloader, self.info, plan, options, self.events).run()
        if options.run:
            self.start()
            report.started = True
        return report

    def holds(self, segments: list[Segment], options: FlashOptions | None = None) -> bool:
        """Whether the chip already holds ``segments`` (CRC command or read-back; nothing is written)."""
        assert self.info is not None and self.chip is not None
        options = options or FlashOptions()
        if options.verify == "none":
            options = FlashOptions(**{**vars(options), "verify": "auto"})
        plan = plan_flash(segments, self.chip, self.flash_size, options)
        return not Flasher(self.bootloader, self.info, plan, options, self.events).differing()

    def read_image(self) -> bytes | None:
        """What the chip's flash holds from its base up to the first erased page, trailing 0xFF dropped;
        ``None`` if it cannot be read (readout protection) or holds nothing."""
        assert self.chip is not None
        if self.protected:
            return None
        data = bytearray()
        try:
            for address, size in self.chip.pages(self.flash_size):
                page = b"".join(self.bootloader.read_memory(address + offset, min(MAX_BLOCK, size - offset))
                                for offset in range(0, size, MAX_BLOCK))
                if page.count(0xFF) == len(page):
                    break  # an image is contiguous: the first erased page ends it
                data += page
        except TargetNack:
            return None
        return bytes(data.rstrip(b"\xff")) or None

    def vector_table_erased(self) -> bool | None:
        """Whether the initial stack pointer and reset vector are erased, read through the bootloader."""
        if self.chip is None or self.protected:
            return None
        return self.bootloader.read_memory(self.chip.flash_base, 8) == b"\xff" * 8

    def start(self) -> None:
        """BOOT0 low and a reset when the lines are wired (no bootloader session needed); otherwise the Go
        command, connecting first if this driver has not yet (a ``TargetNoSync`` then: nothing answers)."""
        if self.lines.wired:
            self.lines.play(self.options.run)
            return
        if self.chip is None:
            self.connect()
        assert self.chip is not None
        self.bootloader.go(self.chip.flash_base)
