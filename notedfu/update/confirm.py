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
            text = seen.decode(errors="replace")
            if (match := regex.search(text)) and "\n" in text[match.end():]:  # the whole line, for the log
                return line_matching(text, regex)
        return line_matching(seen.decode(errors="replace"), regex)
    finally:
        port.close()


def line_matching(text: str, regex: re.Pattern[str]) -> str | None:
    """The whole line of ``text`` in which ``regex`` matches first (stripped), or ``None``."""
    match = regex.search(text)
    if match is None:
        return None
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start:None if end < 0 else end].strip()
