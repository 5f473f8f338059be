"""pyserial URL handler for ``sim://``: simulated devices behind a real port API.

``sim://notecard?image=fw.bin&profile=uart9600&fault=corrupt@3&name=bench``
``sim://stm32?chip=420&bootloader=v3crc&flash_file=flash.bin&boot0=rts&reset=dtr``

Notecard options (URL query): ``image``, ``profile`` (uart9600, aux115200, usb, i2c100k,
i2c400k), ``latency`` and ``per_kib`` (card seconds), ``rate`` (bits/s),
``download`` (seconds Notehub takes), ``ready_delay``, ``dfu_timeout``,
``max_chunk``, ``binary`` (0/1), ``mode`` (initial hub mode), ``fault``
(repeatable, see :mod:`notedfu.sim.faults`), ``name`` (share one card).

STM32 options: see :func:`notedfu.sim.stm32.stm32_from_options`, plus ``boot0``
and ``reset`` naming the modem line wired to each (``rts``, ``dtr``, ``!rts``…;
default: none, BOOT0 strapped high) and ``name``.

Only ``serial.serial_for_url`` resolves URLs (``serial.Serial`` does not), and
pyserial hides an ``ImportError`` in this module as "protocol not known": keep
its imports to the standard library, pyserial and notedfu.
"""

from __future__ import annotations

import time

import serial
from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from notedfu.sim import registry
from notedfu.specs import parse_spec
from notedfu.sim.cardport import CardPort
from notedfu.sim.notecard import card_from_options
from notedfu.sim.stm32 import stm32_from_options


def parse_sim_url(url: str) -> tuple[str, dict[str, list[str]]]:
    """Split ``sim://DEVICE?query`` into (device, options)."""
    spec = parse_spec(url)
    if spec.scheme != "sim":
        raise SerialException(f"expected a sim:// URL, got {url!r}")
    return spec.host, spec.options


def check_sim_url(url: str) -> None:
    """``ValueError`` for a ``sim://`` URL no simulator would take (unknown device or option)."""
    from notedfu.sim.card_config import CARD_OPTIONS
    from notedfu.sim.stm32 import STM32_OPTIONS
    from notedfu.specs import check_option_names

    try:
        device, opts = parse_sim_url(url)
    except SerialException as exc:
        raise ValueError(str(exc)) from None
    known = {"notecard": CARD_OPTIONS, "stm32": STM32_OPTIONS}
    if device not in known:
        raise ValueError(f"unknown simulated device {device!r} in {url!r} (known: notecard, stm32)")
    check_option_names(opts, known[device], f"sim://{device}")


class Serial(SerialBase):
    """A serial port whose far end is a simulated device."""

    def open(self) -> None:
        """Parse the URL in ``self.port`` and connect to the simulated device."""
        if self.is_open:
            raise SerialException("port already open")
        device, opts = parse_sim_url(self.port)
        name = opts.get("name", [None])[-1]
        self._wiring: dict[str, tuple[str, bool]] = {}
        try:
            if device == "notecard":
                self.card = registry.get_or_create("notecard", name, lambda: card_from_options(opts))
                self._link = CardPort(self.card, self.card.link)
            elif device == "stm32":
                self.chip = registry.get_or_create("stm32", name, lambda: stm32_from_options(opts))
                self._link = self.chip
                for signal in ("boot0", "reset"):
                    if wire := opts.get(signal, [""])[-1]:
                        line = wire.lstrip("!")
                        if line not in ("rts", "dtr"):
                            raise ValueError(f"{signal} must be wired to rts or dtr (or !rts, !dtr), not {wire!r}")
                        self._wiring[line] = (signal, wire.startswith("!"))
            else:
                raise SerialException(f"unknown simulated device {device!r} in {self.port!r} (known: notecard, stm32)")
        except (OSError, ValueError) as exc:
            raise SerialException(f"bad sim:// URL {self.port!r}: {exc}") from exc
        self.is_open = True

    def close(self) -> None:
        """Disconnect (a named device keeps its state; an unnamed chip closes its flash file)."""
        if self.is_open and hasattr(self, "chip") and not parse_sim_url(self.port)[1].get("name"):
            self.chip.close()
        self.is_open = False

    def _reconfigure_port(self, force_update: bool = False) -> None:
        """Nothing to configure: the link speed comes from the profile."""

    def _drive(self, line: str, asserted: bool) -> None:
        if self.is_open and line in self._wiring:
            signal, inverted = self._wiring[line]
            self.chip.set_lines(**{signal: asserted != inverted})

    def _update_rts_state(self) -> None:
        self._drive("rts", self._rts_state)

    def _update_dtr_state(self) -> None:
        self._drive("dtr", self._dtr_state)

    @property
    def in_waiting(self) -> int:
        """Bytes that have arrived and can be read now."""
        if not self.is_open:
            raise PortNotOpenError()
        return self._link.available(self._link.clock())

    def read(self, size: int = 1) -> bytes:
        """Read up to ``size`` bytes, waiting as the wire would, up to ``timeout``."""
        if not self.is_open:
            raise PortNotOpenError()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        out = bytearray()
        while True:
            now = self._link.clock()
            out += self._link.read(size - len(out), now)
            if len(out) >= size:
                return bytes(out)
            remaining = None if deadline is None else deadline - time.monotonic()  # the host's own timeout
            if remaining is not None and remaining <= 0:
                return bytes(out)
            wait = self._link.time_until(size - len(out), now)
            if wait is None:  # nothing more is coming in this process
                if remaining is None:
                    return bytes(out)
                wait = remaining
            time.sleep(max(0.0, min(wait, remaining if remaining is not None else wait)) + 1e-6)

    def write(self, data: bytes) -> int:
        """Send bytes to the device."""
        if not self.is_open:
            raise PortNotOpenError()
        data = bytes(data)
        self._link.feed(data, self._link.clock())
        return len(data)

    def reset_input_buffer(self) -> None:
        """Discard what the device has sent."""
        self._link.reset_input()

    def reset_output_buffer(self) -> None:
        """Nothing is buffered on the way out."""


# pyserial's handler lookup wants the module attribute ``Serial``.
__all__ = ["Serial", "parse_sim_url", "serial"]
