"""Boot confirmation: watch a console for the new firmware's banner.

``console`` is a serial spec (``/dev/ttyUSB1``, ``/dev/ttyAMA1?baud=115200``,
any pyserial URL) or, on the simulated rig, ``qemu:FLASH_FILE``: boot the
emulated chip's flash in QEMU and watch its USART1.
"""

from __future__ import annotations

import re
import time

import serial

from notedfu import stopping
from notedfu.errors import LinkError
from notedfu.ports import console_url, serial_for_url
from notedfu.protocol.firmware import banner_line
from notedfu.specs import int_option


def watch_console(console: str, pattern: str, timeout: float, baud: int = 115200) -> str | None:
    """The console line where ``pattern`` (a regex) appeared within ``timeout`` seconds, or ``None``."""
    regex = re.compile(pattern)
    device, options = console_url(console)  # qemu:FLASH_FILE is a port too (notedfu.sim.protocol_qemu)
    try:
        port = serial_for_url(device, baudrate=int_option(options, "baud", console) or baud, timeout=0.2)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise LinkError(f"cannot open console {console!r}: {exc}", code="E_CONSOLE_OPEN") from exc
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            stopping.check()  # stopped while watching: the next run watches again, nothing is decided now
            try:
                seen = (seen + port.read(max(1, port.in_waiting)))[-4096:]
            except (serial.SerialException, OSError) as exc:  # unplugged, or the adapter reset
                raise LinkError(f"the console {console!r} went away while watching it: {exc}",
                                code="E_CONSOLE_LOST") from exc
            if line := banner_line(seen.decode(errors="replace"), regex):
                return line
        return banner_line(seen.decode(errors="replace"), regex, complete=False)
    finally:
        port.close()

