"""The simulated rig: a Notecard and an STM32 on pseudo-terminals, and QEMU as the target's console.

What a real rig has — a Notecard on a serial port, an STM32 whose ROM
bootloader answers on another, a console where the application prints —
built from the simulators, in this process (so a test or the demo can look
inside), served on ptys (so the agent, ``notedfu`` in a subprocess,
``stm32flash`` or a note-python script reach them as they would real ports),
with BOOT0 and NRST on a simulated GPIO chip when ``lines`` is set.
The emulated chip keeps its flash in a file; ``qemu:FLASH_FILE`` as the
console boots that file in ``qemu-system-arm`` and watches its USART1.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from notedfu.sim.faults import parse_faults
from notedfu.sim.gpio import BOOT0, NRST, SimGpioChip
from notedfu.sim.notecard import NotecardSim, card_from_options
from notedfu.sim.pty import PtyServer, card_server, stm32_server
from notedfu.sim.stm32 import STM32_FAULTS, Stm32Sim
from notedfu.sim.qemu import qemu_available

def _firmware_dir() -> Path:
    """The prebuilt demo firmware: the checkout's ``firmware/prebuilt``, else the installed package data."""
    checkout = Path(__file__).resolve().parent.parent.parent / "firmware" / "prebuilt"
    if checkout.is_dir():
        return checkout
    spec = importlib.util.find_spec("notedfu.prebuilt")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else checkout


FIRMWARE_DIR = _firmware_dir()
"""The demo images committed with the sources (a checkout or an editable install)."""

BANNER = "notedfu-demo {version} booted"
"""What the demo firmware prints at boot (and every two seconds after)."""


def demo_image(version: str, firmware_dir: Path = FIRMWARE_DIR) -> bytes:
    """The prebuilt demo firmware ``version`` (``1.0.0`` or ``1.1.0``)."""
    return (firmware_dir / f"demo-{version}.bin").read_bytes()


@dataclass
class RigSetup:
    """What the simulated rig starts with."""

    offered: bytes | None  # the image the card holds, as if Notehub had delivered it (None: nothing)
    installed: bytes  # what the chip's flash holds
    offered_name: str = "firmware.bin"
    card: dict[str, Any] = field(default_factory=dict)  # sim://notecard options: profile, latency, fault…
    chip_id: int = 0x420  # STM32F100, as in QEMU's stm32vldiscovery
    bootloader: str = "v3crc"
    chip_faults: tuple[str, ...] = ()
    chip_time_scale: float = 1.0  # scales the chip's erase and programming times
    chip_baud: int = 115200  # the bootloader link's modeled rate (AN3155's usual; tests may go faster)
    lines: bool = False  # BOOT0 and NRST wired (sim-gpio): the chip starts running its application
    card_clock: Callable[[], float] | None = None  # the card's own timers (a test's clock; None: real time)


class SimulatedRig:
    """A running simulated rig; ``close()`` (or ``with``) tears it down."""

    def __init__(self, workdir: Path, setup: RigSetup) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.card: NotecardSim = card_from_options({"mode": "periodic", **setup.card}, state_clock=setup.card_clock)
        if setup.offered is not None:
            self.card.stage(setup.offered, setup.offered_name)
        self.mode_found = self.card.hub_mode
        self.flash_file = self.workdir / "flash.bin"
        self.flash_file.write_bytes(setup.installed)  # the chip pads it with erased flash
        self.chip = Stm32Sim(setup.chip_id, setup.bootloader, flash_file=self.flash_file,
                             time_scale=setup.chip_time_scale, baud=setup.chip_baud,
                             faults=parse_faults(list(setup.chip_faults), STM32_FAULTS))
        self.servers: list[PtyServer] = []
        self.gpio: SimGpioChip | None = None
        try:
            self.servers.append(card_server(self.card).start())
            self.servers.append(stm32_server(self.chip).start())
            if setup.lines:
                # A short path: Unix socket paths are limited to 108 bytes, pytest's tmp_path is not.
                self._gpio_dir = tempfile.mkdtemp(prefix="notedfu-rig-")
                self.gpio = SimGpioChip(self.chip, Path(self._gpio_dir) / "gpio.sock")
        except BaseException:
            self.close()
            raise

    @property
    def boot0_line(self) -> str | None:
        """The line spec for BOOT0 (``None`` when the rig has no lines)."""
        return self.gpio.spec(BOOT0) if self.gpio else None

    @property
    def reset_line(self) -> str | None:
        """The line spec for NRST (``None`` when the rig has no lines)."""
        return self.gpio.spec(NRST) if self.gpio else None

    @property
    def notecard_port(self) -> str:
        """The simulated Notecard's pty."""
        return self.servers[0].path

    @property
    def target_port(self) -> str:
        """The emulated STM32 bootloader's pty."""
        return self.servers[1].spec

    @property
    def console(self) -> str | None:
        """Where the application's banner shows: QEMU booting the flash file (``None`` without QEMU)."""
        return f"qemu:{self.flash_file}" if qemu_available() else None

    def replug_notecard(self) -> None:
        """A new pty for the same card (the old one stops, as if the card had been unplugged)."""
        self.servers[0].stop()
        self.servers[0] = card_server(self.card).start()

    def close(self) -> None:
        """Stop serving and close the flash file."""
        for server in self.servers:
            server.stop()
        self.servers.clear()
        if self.gpio is not None:
            self.gpio.close()
            shutil.rmtree(self._gpio_dir, ignore_errors=True)
            self.gpio = None
        self.chip.close()

    def __enter__(self) -> "SimulatedRig":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
