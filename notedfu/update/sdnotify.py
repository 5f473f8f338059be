"""systemd's readiness protocol (``sd_notify``): READY, STATUS, WATCHDOG, STOPPING.

Written here rather than taken from a library: the protocol is one datagram on
the Unix socket named by ``$NOTIFY_SOCKET``, and the bindings that exist either
need libsystemd's headers to build (systemd-python) or have not been released
since 2017 (sdnotify).
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Sends notifications when run under systemd (``Type=notify``); does nothing otherwise."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        wanted = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval = int(usec) / 2e6 if wanted else 0.0  # ping at twice the required rate
        self._last_ping = 0.0

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines (``ready=1`` → ``READY=1``); whether it was sent."""
        if not self.address:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # never block the agent: a service manager that stopped reading loses the note, not us
                sock.sendto(message, socket.MSG_DONTWAIT, self.address)
        except OSError:
            return False
        return True

    def ping(self) -> None:
        """``WATCHDOG=1``, at most every half watchdog period."""
        if self.watchdog_interval and time.monotonic() - self._last_ping >= self.watchdog_interval:
            self._last_ping = time.monotonic()
            self.notify(watchdog=1)
