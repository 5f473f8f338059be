"""Open a Notecard from one spec string.

========================================  =====================================
spec                                      opens
========================================  =====================================
``/dev/ttyACM0``, ``/dev/serial0?baud=9600``  a serial port (pyserial)
``sim://notecard?image=fw.bin&…``         the simulator (pyserial URL handler)
``rfc2217://host:port``, ``spy://…``      any other pyserial URL
``i2c:/dev/i2c-1?address=0x17``           serial-over-I2C through smbus2
``i2c:sim://notecard?profile=i2c100k&…``  the simulated I2C bus
========================================  =====================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import serial

import notedfu.sim  # noqa: F401 - registers the sim:// URL scheme with pyserial
from notedfu.errors import LinkError, UsageError
from notedfu.notecard.transport import FastI2C, FastSerial
from notedfu.specs import int_option, split_options

ENV_SPEC = "NOTEDFU_NOTECARD"
DEFAULT_BAUD = 9600  # the Notecard's UART; USB CDC ignores it, AUX uses 115200


@dataclass(frozen=True)
class LinkSpec:
    """A parsed ``--notecard`` spec."""

    kind: str  # "serial" or "i2c"
    target: str  # device path or URL
    baud: int = DEFAULT_BAUD
    address: int = 0x17

    @property
    def simulated(self) -> bool:
        """Whether the far end is the simulator."""
        return self.target.lower().startswith("sim://")


def parse_spec(spec: str | None, baud: int | None = None) -> LinkSpec:
    """Parse a spec (``None`` → ``$NOTEDFU_NOTECARD``); raise ``UsageError`` if unusable."""
    spec = spec or os.environ.get(ENV_SPEC)
    if not spec:
        raise UsageError(f"no Notecard given: use --notecard SPEC or set {ENV_SPEC}", code="E_NO_NOTECARD")
    if spec.startswith("i2c:"):
        target, options = split_options(spec[4:])
        if not target:
            raise UsageError(f"no I2C bus in {spec!r} (e.g. i2c:/dev/i2c-1)", code="E_BAD_SPEC")
        return LinkSpec("i2c", target, address=int_option(options, "address", spec) or 0x17)
    target, options = split_options(spec)
    return LinkSpec("serial", target, baud=baud or int_option(options, "baud", spec) or DEFAULT_BAUD)


Card = FastSerial | FastI2C


def open_notecard(spec: str | LinkSpec | None, *, baud: int | None = None, timeout: float = 30.0) -> Card:
    """Open the Notecard named by ``spec`` and run note-python's reset handshake."""
    link = spec if isinstance(spec, LinkSpec) else parse_spec(spec, baud)
    try:
        if link.kind == "i2c":
            return FastI2C(_open_bus(link), link.address, timeout=timeout)
        port = serial.serial_for_url(link.target, baudrate=link.baud)
        return FastSerial(port, timeout=timeout)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise LinkError(f"cannot open Notecard {link.target!r}: {exc}", code="E_LINK_OPEN") from exc
    except Exception as exc:  # note-python raises bare Exception when the handshake fails
        raise LinkError(f"Notecard on {link.target!r} does not answer: {exc}", code="E_LINK_NO_ANSWER") from exc


def _open_bus(link: LinkSpec):
    if link.simulated:
        from notedfu.sim import registry
        from notedfu.sim.i2c import SimI2CBus
        from notedfu.sim.notecard import card_from_options
        from notedfu.sim.protocol_sim import parse_sim_url

        _, opts = parse_sim_url(link.target)
        opts.setdefault("profile", ["i2c100k"])
        name = opts.get("name", [None])[-1]
        card = registry.get_or_create("notecard", name, lambda: card_from_options(opts))
        return SimI2CBus(card, link.address)
    from smbus2 import SMBus

    return SMBus(link.target)
