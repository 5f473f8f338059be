"""Open a Notecard from one spec string.

========================================  =====================================
spec                                      opens
========================================  =====================================
``/dev/ttyACM0``, ``/dev/serial0?baud=9600``  a serial port (pyserial)
``sim://notecard?image=fw.bin&…``         the simulator (pyserial URL handler)
``rfc2217://host:port``, ``spy://…``      any other pyserial URL
``i2c:/dev/i2c-1?address=0x17``           serial-over-I2C through smbus2
``i2c:/dev/i2c-1?pacing=docs``            … polling at Blues' documented minimum
``i2c:sim://notecard?profile=i2c100k&…``  the simulated I2C bus
========================================  =====================================

Every port is locked for as long as it is open (:mod:`notedfu.portlock`): a
second process on the same card gets ``E_BUSY`` naming the first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import serial

from notedfu.errors import LinkError, NotedfuError, UsageError
from notedfu.notecard.client import CardClient
from notedfu.notecard.i2c_link import PACING, I2CLink
from notedfu.notecard.transport import SerialLink
from notedfu.portlock import PortLock
from notedfu.ports import open_i2c_bus, serial_for_url
from notedfu import specs

ENV_SPEC = "NOTEDFU_NOTECARD"
DEFAULT_BAUD = 9600  # the Notecard's UART; USB CDC ignores it, AUX uses 115200


@dataclass(frozen=True)
class LinkSpec:
    """A parsed ``--notecard`` spec."""

    kind: str  # "serial" or "i2c"
    target: str  # device path or URL
    baud: int = DEFAULT_BAUD
    address: int = 0x17
    pacing: str = "blues"  # I2C: "blues" (note-c's pacing) or "docs" (the documented minimum)

    @property
    def simulated(self) -> bool:
        """Whether the far end is the simulator."""
        return self.target.lower().startswith("sim://")

    @property
    def lock_name(self) -> str:
        """What the port lock is keyed on."""
        return f"{self.target}@{self.address:#04x}" if self.kind == "i2c" else self.target


def parse_spec(spec: str | None, baud: int | None = None) -> LinkSpec:
    """Parse a spec (``None`` → ``$NOTEDFU_NOTECARD``); raise ``UsageError`` if unusable."""
    spec = spec or os.environ.get(ENV_SPEC)
    if not spec:
        raise UsageError(f"no Notecard given: use --notecard SPEC or set {ENV_SPEC}", code="E_NO_NOTECARD")
    parsed = specs.parse_spec(spec)
    if parsed.prefix == "i2c":
        if not parsed.device:
            raise UsageError(f"no I2C bus in {spec!r} (e.g. i2c:/dev/i2c-1)", code="E_BAD_SPEC")
        # A URL keeps its query, and the link reads its own options (address, pacing) from it too.
        return LinkSpec("i2c", parsed.device, address=parsed.int_option("address", 0x17) or 0x17,
                        pacing=parsed.choice("pacing", tuple(PACING), "blues"))
    if parsed.scheme:
        return LinkSpec("serial", spec, baud=baud or DEFAULT_BAUD)
    return LinkSpec("serial", parsed.device, baud=baud or parsed.int_option("baud") or DEFAULT_BAUD)


def open_notecard(spec: str | LinkSpec | None, *, baud: int | None = None, timeout: float = 30.0) -> CardClient:
    """Open and lock the Notecard named by ``spec`` and run the newline handshake."""
    link = spec if isinstance(spec, LinkSpec) else parse_spec(spec, baud)
    lock = PortLock(link.lock_name, "Notecard").acquire()
    try:
        try:
            if link.kind == "i2c":
                transport = I2CLink(_open_bus(link), link.address, pacing=PACING[link.pacing], name=link.target)
            else:
                transport = SerialLink(serial_for_url(link.target, baudrate=link.baud), name=link.target)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"cannot open Notecard {link.target!r}: {exc}", code="E_LINK_OPEN") from exc
        client = CardClient(transport, timeout=timeout, lock=lock)
        try:
            client.resync()
        except NotedfuError:
            transport.close()
            raise
        return client
    except BaseException:
        lock.release()
        raise


def _open_bus(link: LinkSpec):
    return open_i2c_bus(link.target, link.address)
