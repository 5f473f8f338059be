"""Boot confirmation: watch a console for the new firmware's banner.

``console`` is a serial spec (``/dev/ttyUSB1``, ``/dev/ttyAMA1?baud=115200``,
any pyserial URL) or, on the simulated rig, ``qemu:FLASH_FILE``: boot the
emulated chip's flash in QEMU and watch its USART1.
"""

from __future__ import annotations

import re
import time

import serial

from notedfu.errors import LinkError
from notedfu.specs import int_option, split_options
from notedfu.target.qemu import boot


def watch_console(console: str, pattern: str, timeout: float, baud: int = 115200) -> bool:
    """Whether ``pattern`` (a regex) appears on ``console`` within ``timeout`` seconds."""
    if console.startswith("qemu:"):
        return boot(console[5:], pattern, timeout).matched
    device, options = split_options(console)
    try:
        port = serial.serial_for_url(device, baudrate=int_option(options, "baud", console) or baud, timeout=0.2)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise LinkError(f"cannot open console {console!r}: {exc}", code="E_CONSOLE_OPEN") from exc
    regex = re.compile(pattern)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            seen = (seen + port.read(max(1, port.in_waiting)))[-4096:]
            if regex.search(seen.decode(errors="replace")):
                return True
        return False
    finally:
        port.close()
