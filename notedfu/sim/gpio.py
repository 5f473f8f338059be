"""A simulated GPIO chip wired to the emulated STM32's BOOT0 and NRST.

A pseudo-terminal has no modem lines, so on the simulated rig BOOT0 and NRST
travel on a Unix socket instead, the way Linux's gpio-sim offers GPIOs
without hardware. The agent drives them with the line spec
``sim-gpio:SOCKET:OFFSET`` — offset 0 is BOOT0, offset 1 is NRST — through
the same :class:`~notedfu.target.lines.LineControl` sequences a real rig's
``gpiochip0:17`` gets, so entering the bootloader and starting the
application by reset are exercised as on hardware.

Wire format, one line each way per change: ``OFFSET=0|1\\n`` (1 = active:
BOOT0 high, or NRST held in reset) answered ``ok\\n`` once applied.
"""

from __future__ import annotations

import os
import socketserver
import threading
from pathlib import Path

from notedfu.sim.stm32 import Stm32Sim

BOOT0, NRST = 0, 1


class _Handler(socketserver.StreamRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        for raw in self.rfile:
            offset, _, value = raw.decode(errors="replace").strip().partition("=")
            if offset not in ("0", "1") or value not in ("0", "1"):
                self.wfile.write(b"error: expected OFFSET=0|1 with OFFSET 0 (BOOT0) or 1 (NRST)\n")
                continue
            if int(offset) == BOOT0:
                self.server.chip.set_lines(boot0=value == "1")
            else:
                self.server.chip.set_lines(reset=value == "1")
            self.wfile.write(b"ok\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    chip: Stm32Sim


class SimGpioChip:
    """Serves BOOT0 and NRST of one emulated chip on a Unix socket; the chip starts in its application."""

    def __init__(self, chip: Stm32Sim, path: str | Path) -> None:
        self.path = str(path)
        if os.path.exists(self.path):
            os.unlink(self.path)
        self._server = _Server(self.path, _Handler)
        self._server.chip = chip
        # With its lines driven, the board has BOOT0 pulled low: it powers up into the application.
        chip.set_lines(boot0=False, reset=True)
        chip.set_lines(reset=False)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"sim-gpio {self.path}",
                                        daemon=True)
        self._thread.start()

    def spec(self, offset: int) -> str:
        """The line spec the agent is given for ``offset`` (BOOT0 or NRST)."""
        return f"sim-gpio:{self.path}:{offset}"

    def close(self) -> None:
        """Stop serving and remove the socket."""
        self._server.shutdown()
        self._server.server_close()
        Path(self.path).unlink(missing_ok=True)
