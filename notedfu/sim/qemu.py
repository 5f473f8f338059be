"""Boot a flash image in QEMU and watch its serial console.

The emulated bootloader's flash file holds exactly what was flashed; QEMU's
``stm32vldiscovery`` machine (STM32F100, USART1 at 0x40013800) boots it, and
its USART1 output appears on QEMU's stdout. Used to prove that what notedfu
flashed really boots.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

QEMU = "qemu-system-arm"
MACHINE = "stm32vldiscovery"


@dataclass
class BootResult:
    """What QEMU printed, and whether the pattern showed up in time."""

    matched: bool
    output: str
    seconds: float
    ended: bool = False  # QEMU exited by itself before the pattern or the timeout (killed, crashed)


def qemu_available() -> bool:
    """Whether ``qemu-system-arm`` is installed."""
    return shutil.which(QEMU) is not None


def boot(flash_image: str | Path, pattern: str, timeout: float = 10.0, machine: str = MACHINE,
         should_stop: Callable[[], bool] = lambda: False) -> BootResult:
    """Boot ``flash_image`` (loaded at the flash base) until ``pattern`` (a regex) appears on the console,
    ``timeout`` passes, or ``should_stop()`` says so. QEMU runs in its own session: a Ctrl-C meant for
    notedfu does not kill it behind notedfu's back."""
    argv = [QEMU, "-M", machine, "-nographic", "-monitor", "none", "-serial", "stdio",
            "-kernel", str(flash_image)]
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    assert process.stdout is not None
    regex = re.compile(pattern)
    output = b""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    try:
        ended = False
        while (left := timeout - (time.monotonic() - started)) > 0 and not should_stop():
            if not selector.select(min(left, 0.2)):
                continue
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                ended = True
                break
            output += chunk
            text = output.decode(errors="replace")
            if (match := regex.search(text)) and "\n" in text[match.end():]:  # the whole line, for the log
                return BootResult(True, text, time.monotonic() - started)
        text = output.decode(errors="replace")
        return BootResult(regex.search(text) is not None, text, time.monotonic() - started, ended)
    finally:
        selector.close()
        process.kill()
        process.wait()
