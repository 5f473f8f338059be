"""Boot a flash image in QEMU and watch its serial console.

The emulated bootloader's flash file holds exactly what was flashed; QEMU's
``stm32vldiscovery`` machine (STM32F100, USART1 at 0x40013800) boots it, and
its USART1 output is the console of :mod:`notedfu.sim.protocol_qemu`. Used to
prove that what notedfu flashed really boots.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from serial.serialutil import SerialException

from notedfu.protocol.firmware import banner_line
from notedfu.sim.protocol_qemu import MACHINE, QEMU, Serial, qemu_available

__all__ = ["MACHINE", "QEMU", "BootResult", "boot", "qemu_available"]


@dataclass
class BootResult:
    """What QEMU printed, and whether the pattern showed up in time."""

    matched: bool
    output: str
    seconds: float
    ended: bool = False  # QEMU exited by itself before the pattern or the timeout (killed, crashed)


def boot(flash_image: str | Path, pattern: str, timeout: float = 10.0,
         should_stop: Callable[[], bool] = lambda: False) -> BootResult:
    """Boot ``flash_image`` (loaded at the flash base) until ``pattern`` (a regex) appears on the console,
    ``timeout`` passes, or ``should_stop()`` says so."""
    regex = re.compile(pattern)
    started = time.monotonic()
    console = Serial(f"qemu://{Path(flash_image).resolve()}", timeout=0.2)
    output = b""
    try:
        while time.monotonic() - started < timeout and not should_stop():
            try:
                output += console.read(4096)
            except SerialException:
                return BootResult(False, output.decode(errors="replace"), time.monotonic() - started, ended=True)
            if banner_line(output.decode(errors="replace"), regex):
                return BootResult(True, output.decode(errors="replace"), time.monotonic() - started)
        text = output.decode(errors="replace")
        return BootResult(regex.search(text) is not None, text, time.monotonic() - started)
    finally:
        console.close()
