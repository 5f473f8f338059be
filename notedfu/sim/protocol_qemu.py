"""pyserial URL handler for ``qemu://FLASH_FILE``: the console of a board QEMU boots from a flash file.

The emulated bootloader's flash file holds what was flashed; QEMU's
``stm32vldiscovery`` machine boots it and its USART1 is this port's read side
(writes are dropped: the demo firmware only talks). The board runs from
``open()`` to ``close()``; if QEMU exits meanwhile, ``read`` raises
``SerialException`` like an unplugged adapter. The config's ``qemu:FLASH_FILE``
console spec is this URL (see :func:`notedfu.ports.console_url`).

As with ``sim://``, pyserial hides an ``ImportError`` here as "protocol not
known": standard library, pyserial and notedfu only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import selectors
import shutil
import subprocess
import time
import urllib.parse

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

QEMU = "qemu-system-arm"
MACHINE = "stm32vldiscovery"  # STM32F100, USART1 at 0x40013800: what the demo firmware is built for


PR_SET_PDEATHSIG = 1  # linux/prctl.h
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _die_with_parent() -> None:
    """In the child, before exec: the kernel kills QEMU when the process that opened the port dies, even
    by SIGKILL (a closed port kills it otherwise). Only a C call here: libc was loaded before the fork."""
    _LIBC.prctl(PR_SET_PDEATHSIG, 9)  # SIGKILL


def qemu_available() -> bool:
    """Whether ``qemu-system-arm`` is installed."""
    return shutil.which(QEMU) is not None


class Serial(SerialBase):
    """QEMU's serial console, read like a serial port."""

    def open(self) -> None:
        """Start QEMU on the flash file the URL names."""
        if self.is_open:
            raise SerialException("port already open")
        parts = urllib.parse.urlsplit(self.port)
        flash = urllib.parse.unquote(parts.netloc + parts.path)
        if not qemu_available():
            raise SerialException(f"{QEMU} is not installed (sudo apt-get install qemu-system-arm)")
        if not os.path.isfile(flash):
            raise SerialException(f"no flash file {flash!r} for QEMU to boot")
        self._process = subprocess.Popen(
            [QEMU, "-M", MACHINE, "-nographic", "-monitor", "none", "-serial", "stdio", "-kernel", flash],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C meant for notedfu does not kill the board behind its back
            preexec_fn=_die_with_parent)  # … but notedfu killed outright does: no orphaned QEMU
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._process.stdout, selectors.EVENT_READ)
        self._buffer = bytearray()
        self._ended = ""
        self.is_open = True

    def close(self) -> None:
        """Stop QEMU."""
        if self.is_open:
            self.is_open = False
            self._selector.close()
            self._process.kill()
            self._process.stdin.close()
            self._process.wait()

    def _pump(self, timeout: float) -> None:
        if self._ended or not self._selector.select(max(0.0, timeout)):
            return
        chunk = os.read(self._process.stdout.fileno(), 4096)
        if chunk:
            self._buffer += chunk
        else:
            self._process.wait()
            self._ended = f"QEMU exited (status {self._process.returncode})"

    @property
    def in_waiting(self) -> int:
        """Bytes the board has printed and nobody has read."""
        if not self.is_open:
            raise PortNotOpenError()
        self._pump(0)
        return len(self._buffer)

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes within ``timeout``; ``SerialException`` once QEMU is gone and all is read."""
        if not self.is_open:
            raise PortNotOpenError()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while len(self._buffer) < size and not self._ended:
            left = 0.2 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                break
            self._pump(min(left, 0.2))
        if not self._buffer and self._ended:
            raise SerialException(f"the board's console ended: {self._ended}")
        data, self._buffer = bytes(self._buffer[:size]), self._buffer[size:]
        return data

    def write(self, data: bytes) -> int:
        """Typed into the board's console (USART1 RX); the demo firmware ignores it, the sensor's shell reads it."""
        if not self.is_open:
            raise PortNotOpenError()
        try:
            self._process.stdin.write(data)
            self._process.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise SerialException(f"the board's console ended: {exc}") from exc
        return len(data)

    def reset_input_buffer(self) -> None:
        """Forget what the board printed so far."""
        self._buffer.clear()

    def reset_output_buffer(self) -> None:
        """Nothing is buffered on the way out."""

    def _reconfigure_port(self, force_update: bool = False) -> None:
        """Baud rate and framing do not apply to QEMU's console."""
