"""BOOT0 and NRST: entering the ROM bootloader and starting the application.

A line spec names where a signal is wired: ``rts`` / ``dtr`` (the serial
adapter's modem lines, as stm32flash's ``-i`` and stm32loader use them),
``gpiochip0:17`` (a GPIO through libgpiod v2, the ``gpiod`` package — works on
the Pi 5, where RPi.GPIO does not), ``sim-gpio:SOCKET:N`` (the simulated rig's
lines, :mod:`notedfu.sim.gpio`), or ``none``. A leading ``!`` inverts it
(active low). "Active" means BOOT0 high, or NRST held low (the chip in reset).

Sequences are comma-separated steps: ``boot0=1``, ``reset=0``, or a number of
seconds to wait — e.g. the default entry ``boot0=1,reset=1,0.05,reset=0,0.1``.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol

from notedfu.errors import UsageError

ENTER_BOOTLOADER = "boot0=1,reset=1,0.05,reset=0,0.1"
RUN_APPLICATION = "boot0=0,reset=1,0.05,reset=0"


class Line(Protocol):
    """One output line."""

    def set(self, active: bool) -> None: ...


class SerialLine:
    """RTS or DTR of a pyserial port."""

    def __init__(self, port: Any, which: str, inverted: bool) -> None:
        self.port, self.which, self.inverted = port, which, inverted

    def set(self, active: bool) -> None:
        """Assert or release the line."""
        setattr(self.port, self.which, active != self.inverted)


class GpiodLine:
    """A GPIO line through libgpiod v2 (``gpiod`` ≥ 2)."""

    def __init__(self, chip: str, offset: int, inverted: bool) -> None:
        try:
            import gpiod
            from gpiod.line import Direction, Value
        except ImportError as exc:
            raise UsageError("GPIO lines need the gpiod package (libgpiod v2): pip install 'notedfu[gpio]'",
                             code="E_NO_GPIOD") from exc
        self._values = (Value.INACTIVE, Value.ACTIVE)
        path = chip if chip.startswith("/") else f"/dev/{chip}"
        try:
            self.request = gpiod.request_lines(path, consumer="notedfu", config={
                offset: gpiod.LineSettings(direction=Direction.OUTPUT, active_low=inverted)})
        except OSError as exc:
            raise UsageError(f"cannot request GPIO {chip}:{offset}: {exc}", code="E_GPIO") from exc
        self.offset = offset

    def set(self, active: bool) -> None:
        """Drive the line active or inactive."""
        self.request.set_value(self.offset, self._values[active])


class SimGpioLine:
    """A line of the simulated rig's GPIO chip (:mod:`notedfu.sim.gpio`), over its Unix socket."""

    def __init__(self, path: str, offset: int, inverted: bool) -> None:
        self.offset, self.inverted = offset, inverted
        try:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(5)
            self.sock.connect(path)
        except OSError as exc:
            raise UsageError(f"cannot reach the simulated GPIO chip at {path}: {exc}", code="E_GPIO") from exc
        self.answers = self.sock.makefile("rb")

    def set(self, active: bool) -> None:
        """Drive the line; returns once the simulated board has seen it."""
        try:
            self.sock.sendall(f"{self.offset}={int(active != self.inverted)}\n".encode())
            answer = self.answers.readline()
        except OSError as exc:
            raise UsageError(f"the simulated GPIO chip stopped answering: {exc}", code="E_GPIO") from exc
        if answer != b"ok\n":
            raise UsageError(f"the simulated GPIO chip refused line {self.offset}: {answer!r}", code="E_GPIO")


def open_line(spec: str | None, port: Any = None) -> Line | None:
    """A line from its spec; ``None`` for ``none`` or no spec."""
    if not spec or spec == "none":
        return None
    inverted = spec.startswith("!")
    name = spec.lstrip("!")
    if name in ("rts", "dtr"):
        if port is None:
            raise UsageError(f"line {spec!r} needs a serial port", code="E_BAD_SPEC")
        return SerialLine(port, name, inverted)
    if name.startswith("sim-gpio:"):
        path, _, offset = name[len("sim-gpio:"):].rpartition(":")
        if not path or not offset.isdigit():
            raise UsageError(f"bad line spec {spec!r}: use sim-gpio:SOCKET:OFFSET", code="E_BAD_SPEC")
        return SimGpioLine(path, int(offset), inverted)
    chip, _, offset = name.partition(":")
    if not chip or not offset.isdigit():
        raise UsageError(f"bad line spec {spec!r}: use rts, dtr, gpiochipN:OFFSET, none (! inverts)",
                         code="E_BAD_SPEC")
    return GpiodLine(chip, int(offset), inverted)


@dataclass
class LineControl:
    """BOOT0 and NRST, and the sequences that drive them."""

    boot0: Line | None = None
    reset: Line | None = None
    enter: str = ENTER_BOOTLOADER
    run: str = RUN_APPLICATION

    @property
    def wired(self) -> bool:
        """Whether there is a reset line to drive at all."""
        return self.reset is not None

    def play(self, sequence: str) -> None:
        """Run a sequence; steps for unwired signals are skipped."""
        for step in parse_sequence(sequence):
            if isinstance(step, float):
                time.sleep(step)
            else:
                signal, active = step
                line = self.boot0 if signal == "boot0" else self.reset
                if line is not None:
                    line.set(active)


def parse_sequence(text: str) -> list[float | tuple[str, bool]]:
    """``boot0=1,reset=1,0.05`` → [("boot0", True), ("reset", True), 0.05]."""
    steps: list[float | tuple[str, bool]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" in item:
            signal, _, value = item.partition("=")
            if signal not in ("boot0", "reset") or value not in ("0", "1"):
                raise UsageError(f"bad sequence step {item!r}: use boot0=0|1, reset=0|1 or seconds",
                                 code="E_BAD_SPEC")
            steps.append((signal, value == "1"))
        else:
            try:
                steps.append(float(item))
            except ValueError:
                raise UsageError(f"bad sequence step {item!r}", code="E_BAD_SPEC") from None
    return steps
