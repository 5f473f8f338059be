"""Where ports come from: serial URLs and I2C buses, found by scheme, never imported by the layers that use them.

Like pyserial's ``protocol_handler_packages``: a package that serves a scheme
(``notedfu.sim`` serves ``sim://``) is named here and imported only when a port
with that scheme is opened. pyserial looks for ``PACKAGE.protocol_SCHEME`` (its
``Serial`` class); for I2C the same rule looks for ``PACKAGE.i2c_SCHEME`` and its
``open_bus(url, address)``. A new simulator or a remote bus plugs in by adding
its package name to :data:`HANDLER_PACKAGES`; the Notecard and target layers
only ever call :func:`serial_for_url` and :func:`open_i2c_bus`.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import serial

from notedfu.errors import UsageError

HANDLER_PACKAGES = ["notedfu.sim"]


def _register() -> None:
    for package in HANDLER_PACKAGES:
        if package not in serial.protocol_handler_packages:
            serial.protocol_handler_packages.append(package)


_register()


def serial_for_url(url: str, **kwargs: Any) -> serial.SerialBase:
    """pyserial's ``serial_for_url``, with every handler package known."""
    _register()
    return serial.serial_for_url(url, **kwargs)


def console_url(spec: str) -> tuple[str, dict[str, list[str]]]:
    """A confirm console spec as a URL and its options: ``qemu:FLASH_FILE`` is ``qemu://FLASH_FILE`` (the
    board QEMU boots, served by ``notedfu.sim.protocol_qemu``); anything else is a serial spec."""
    from notedfu.specs import parse_spec, split_options

    parsed = parse_spec(spec)
    if parsed.prefix == "qemu":
        return "qemu://" + spec[len("qemu:"):], {}
    return split_options(spec)


def open_i2c_bus(target: str, address: int) -> Any:
    """An I2C bus with smbus2's ``i2c_rdwr``: ``/dev/i2c-1`` (smbus2), or ``SCHEME://…`` from a handler package."""
    scheme, sep, _ = target.partition("://")
    if not sep:
        from smbus2 import SMBus

        return SMBus(target)
    for package in HANDLER_PACKAGES:
        name = f"{package}.i2c_{scheme.lower()}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        return module.open_bus(target, address)
    raise UsageError(f"no I2C bus handler for {scheme}:// (known packages: {', '.join(HANDLER_PACKAGES)})",
                     code="E_BAD_SPEC")


def is_pty(path: str) -> bool:
    """Whether ``path`` is a Unix98 pseudo-terminal slave (majors 136-143): no modem lines, no parity."""
    try:
        return 136 <= os.major(os.stat(path).st_rdev) <= 143
    except (OSError, ValueError):
        return False
