"""``--target`` spec → driver: the one registry ``notedfu flash``, ``notedfu target info`` and the agent use.

A spec that starts with a tool's name and a colon (``stm32flash:/dev/ttyUSB0``,
``openocd:interface/stlink.cfg,target/stm32f1x.cfg``, ``dfu-util:0483:df11``,
``st-flash:``) is that tool's :class:`~notedfu.target.backends.ToolDriver`; any
other spec is a serial port (or ``sim://stm32``) with a ROM bootloader on it.
"""

from __future__ import annotations

from notedfu.events import Events
from notedfu.specs import parse_spec
from notedfu.target.backends import BACKENDS, ToolDriver
from notedfu.target.driver import TargetDriver, TargetOptions
from notedfu.target.rom import RomBootloaderDriver


def split_target(spec: str) -> tuple[str, str]:
    """(driver name, rest): ``stm32flash:/dev/ttyUSB0`` → ("stm32flash", "/dev/ttyUSB0"); a port → ("rom", spec)."""
    prefix = parse_spec(spec).prefix
    if prefix in BACKENDS:
        return prefix, spec[len(prefix) + 1:]
    return "rom", spec


def target_driver(spec: str, options: TargetOptions | None = None, events: Events | None = None) -> TargetDriver:
    """The driver for ``spec``, not yet opened (nothing is touched here)."""
    name, rest = split_target(spec)
    if name == "rom":
        return RomBootloaderDriver(spec, options, events)
    return ToolDriver(name, rest)
