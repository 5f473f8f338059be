"""Serve a simulated device on a pseudo-terminal.

Third-party programs (a note-python script, ``stm32flash``, minicom) open the
slave side like any serial port; the server feeds what they write to a
:class:`~notedfu.sim.cardport.CardPort` and writes the answers back at the
link's speed. The server keeps its own slave descriptor open so a client may
close and reopen the port without the master seeing a hang-up.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import select
import struct
import termios
import threading
import time
import tty
from typing import TYPE_CHECKING, Callable, Protocol

from notedfu import stopping
from notedfu.sim.clock import WALL

if TYPE_CHECKING:
    from notedfu.sim.notecard import NotecardSim


class ByteDevice(Protocol):
    """The byte-level side of a simulated device (a ``CardPort`` and alike)."""

    def feed(self, data: bytes, now: float) -> None: ...
    def available(self, now: float) -> int: ...
    def read(self, size: int, now: float) -> bytes: ...
    def time_until(self, count: int, now: float) -> float | None: ...


MIN_WAKE = 0.0005  # shortest sleep: ≤ 2000 wake-ups a second however slow the link
HOST_TTY_BUFFER = 4096  # Linux N_TTY_BUF_SIZE: what a host's UART driver holds unread


class PtyServer:
    """A simulated device behind ``/dev/pts/N``.

    With ``lossy``, the link has no flow control, like a UART: what the host
    has not read when the terminal's buffer is full is lost (and reported to
    ``on_loss``), where a pty would otherwise hold the sender back. A Linux
    host has a few KiB of tty buffer (``N_TTY_BUF_SIZE`` is 4096), about 0.36 s
    at 115200 baud: a host that stops reading that long mid-answer loses bytes
    on a real UART too.
    """

    def __init__(self, device: ByteDevice, *, lossy: bool = False,
                 on_loss: Callable[[int], None] | None = None, line_options: str = "") -> None:
        self.device = device
        self.line_options = line_options
        self.lossy = lossy
        self.on_loss = on_loss
        self.lost = 0
        self.master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsent = b""

    @property
    def spec(self) -> str:
        """What a client opens: the pty's path, with the options the line needs (``?parity=none``)."""
        return f"{self.path}?{self.line_options}" if self.line_options else self.path

    def start(self) -> "PtyServer":
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, name=f"pty {self.path}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the pty."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def serve_forever(self, until_signal: bool = False) -> None:
        """Move bytes until ``stop`` is called (or, with ``until_signal``, SIGINT/SIGTERM: a simulator
        in a process of its own; one serving an agent in-process must outlive the agent's hand-back)."""
        clock = getattr(self.device, "clock", WALL)  # the device's wire time (a test may hold it still)
        while not self._stop.is_set() and not (until_signal and stopping.requested()):
            now = clock()
            wait = 0.2
            if self._unsent:
                wait = MIN_WAKE
            else:
                due = self.device.time_until(1, now)
                if due is not None:
                    wait = max(MIN_WAKE, due)
            want_write = [self.master] if self._unsent else []
            try:
                readable, _, _ = select.select([self.master], want_write, [], min(wait, 0.2))
            except (OSError, ValueError):
                return
            now = clock()
            if readable:
                try:
                    data = os.read(self.master, 65536)
                except BlockingIOError:
                    data = b""
                except OSError as exc:
                    if exc.errno == errno.EIO:  # no slave open: nothing to hear
                        time.sleep(0.05)
                        continue
                    return
                if data:
                    self.device.feed(data, now)
            ready = self.device.available(now)
            if ready:
                self._unsent += self.device.read(ready, now)
            if self._unsent and self.lossy:
                self._drop_what_the_host_has_no_room_for()
            if self._unsent:
                try:
                    sent = os.write(self.master, self._unsent)
                    self._unsent = self._unsent[sent:]
                except BlockingIOError:
                    pass
                except OSError:
                    return

    def _drop_what_the_host_has_no_room_for(self) -> None:
        """A UART has no flow control: bytes beyond the host's tty buffer are lost, not held back."""
        try:
            queued = struct.unpack("i", fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            return
        room = max(0, HOST_TTY_BUFFER - queued)
        if len(self._unsent) > room:
            lost = len(self._unsent) - room
            self._unsent = self._unsent[:room]
            self.lost += lost
            if self.on_loss:
                self.on_loss(lost)


def stm32_server(chip: ByteDevice) -> PtyServer:
    """The emulated STM32 on a pty. A pty carries no parity bit (Linux clears ``PARENB`` on a pty, and
    recent kernels refuse it with ``EINVAL`` once nothing else changes), so the emulator models the 8E1
    line itself and the server tells clients to send 8N1: its :attr:`~PtyServer.spec` ends ``?parity=none``."""
    return PtyServer(chip, line_options="parity=none")


def card_server(card: "NotecardSim") -> PtyServer:
    """A simulated Notecard on a pty; on a UART profile (not USB, not I2C) without flow control."""
    from notedfu.sim.cardport import CardPort

    uart = not card.link.is_i2c and card.link.bits_per_second <= 1_000_000
    return PtyServer(CardPort(card, card.link), lossy=uart,
                     on_loss=lambda n: card.warn("bytes lost: the host did not read while the card sent "
                                                 "(a UART has no flow control)"))
