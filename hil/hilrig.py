"""The rig the HIL scenarios run on: real boards described by a TOML file, or the simulated rig.

Either way the scenarios drive ``notedfu`` itself, as a rig in CI would — in a
subprocess, over serial ports, with BOOT0/NRST lines and a console — so the
simulated rig exercises the very code path real hardware does; only the ports
differ (ptys and a simulated GPIO chip, and QEMU booting the emulated chip's
flash as the console).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notedfu.config import ConfigError, parse_sections, read_toml
from notedfu.sim.rig import BANNER, FIRMWARE_DIR, RigSetup, SimulatedRig

REPO = Path(__file__).resolve().parent.parent


class RigFileError(ValueError):
    """The rig description is unusable; the message names the key."""


@dataclass
class RigDescription:
    """Where everything is wired (``--rig FILE``; see rig.example.toml)."""

    notecard: str
    target: str
    boot0: str | None = None
    reset: str | None = None
    console: str | None = None
    console_baud: int = 115200
    pattern: str = BANNER
    confirm_timeout: float = 15.0
    firmware: Path = FIRMWARE_DIR

    @classmethod
    def load(cls, path: Path) -> "RigDescription":
        """Read and check a rig file (notedfu's own TOML validator, against :class:`RigFile`)."""
        try:
            rig: RigFile = parse_sections(read_toml(path, "rig file"), RigFile, f"rig file {path}")
        except ConfigError as exc:
            raise RigFileError(exc.message) from exc
        if not rig.notecard.port or not rig.target.port:
            raise RigFileError(f"{path}: notecard.port and target.port are required")
        firmware = Path(rig.firmware.dir)
        return cls(rig.notecard.port, rig.target.port, rig.target.boot0, rig.target.reset, rig.console.port,
                   rig.console.baud, rig.console.pattern, rig.console.timeout,
                   firmware if firmware.is_absolute() else (path.parent / firmware).resolve())


@dataclass
class _PortSection:
    port: str | None = None


@dataclass
class _TargetSection:
    port: str | None = None
    boot0: str | None = None
    reset: str | None = None


@dataclass
class _ConsoleSection:
    port: str | None = None
    baud: int = 115200
    pattern: str = BANNER
    timeout: float = 15.0


@dataclass
class _FirmwareSection:
    dir: str = str(FIRMWARE_DIR)


@dataclass
class RigFile:
    """The rig file's schema: each key's default gives its type (see rig.example.toml)."""

    notecard: _PortSection = field(default_factory=_PortSection)
    target: _TargetSection = field(default_factory=_TargetSection)
    console: _ConsoleSection = field(default_factory=_ConsoleSection)
    firmware: _FirmwareSection = field(default_factory=_FirmwareSection)


class HilRig:
    """One scenario's view of the rig: ports, firmware, a state directory, and ``notedfu`` to run."""

    def __init__(self, description: RigDescription, state_dir: Path, sim: SimulatedRig | None = None) -> None:
        self.d = description
        self.state_dir = state_dir
        self.sim = sim  # the simulated rig, when that is what runs: scenarios that need a card that lies use it

    @classmethod
    def simulated(cls, workdir: Path) -> "HilRig":
        """The simulated rig: a Notecard holding nothing yet, an erased STM32F100 with BOOT0/NRST wired."""
        sim = SimulatedRig(workdir, RigSetup(offered=None, installed=b"", lines=True,
                                             card={"profile": "usb"},
                                             chip_time_scale=0.2))
        description = RigDescription(sim.notecard_port, sim.target_port, sim.boot0_line, sim.reset_line,
                                     sim.console, confirm_timeout=15.0)
        return cls(description, workdir / "state", sim)

    def close(self) -> None:
        """Tear down the simulated rig (real boards stay as they are)."""
        if self.sim is not None:
            self.sim.close()

    # ------------------------------------------------------------ firmware
    def image(self, version: str) -> bytes:
        """The demo firmware ``version`` built for this rig's board."""
        return (self.d.firmware / f"demo-{version}.bin").read_bytes()

    # ------------------------------------------------------------ notedfu
    def notedfu(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``notedfu ARGS`` as a rig would."""
        return subprocess.run([sys.executable, "-m", "notedfu", *args], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)

    def target_args(self, wired: bool = True) -> list[str]:
        """``--target`` and, with ``wired``, the BOOT0/NRST lines."""
        args = ["--target", self.d.target]
        if wired:
            args += ["--boot0", self.d.boot0 or "none", "--reset", self.d.reset or "none"]
        return args

    def update_args(self, *extra: str, console: bool = True, wired: bool = True) -> list[str]:
        """``notedfu update`` against this rig, JSON events on stdout."""
        args = ["update", "--notecard", self.d.notecard, *self.target_args(wired), "--state-dir",
                str(self.state_dir), "--json"]
        if console and self.d.console:
            serial_port = self.d.console.startswith("/") and "?" not in self.d.console
            args += ["--console", f"{self.d.console}?baud={self.d.console_baud}" if serial_port else self.d.console,
                     "--pattern", self.d.pattern, "--confirm-timeout", str(self.d.confirm_timeout)]
        return [*args, *extra]

    def update(self, *extra: str, console: bool = True, wired: bool = True) -> subprocess.CompletedProcess:
        """One ``notedfu update`` cycle."""
        return self.notedfu(*self.update_args(*extra, console=console, wired=wired))

    def flash_directly(self, image: Path) -> subprocess.CompletedProcess:
        """``notedfu flash`` (no Notecard): how a scenario puts the board in its starting state."""
        return self.notedfu("flash", str(image), *self.target_args())

    def sideload(self, image: Path) -> subprocess.CompletedProcess:
        """``notedfu sideload``: the image is offered by the card as if Notehub had delivered it."""
        return self.notedfu("sideload", str(image), "--notecard", self.d.notecard, "--state-dir",
                            str(self.state_dir / "sideload"), "--json")

    def card_status(self) -> dict[str, Any]:
        """``notedfu status --json`` of the card: its hub mode and host-DFU state."""
        done = self.notedfu("status", "--notecard", self.d.notecard, "--state-dir", str(self.state_dir / "status"),
                            "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["card"]

    def flash_size(self) -> int:
        """The target's flash size, as its bootloader reports it."""
        done = self.notedfu("target", "info", *self.target_args(), "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["flash_size"]

    def job(self) -> dict[str, Any]:
        """The newest job the agent saved."""
        jobs = sorted((self.state_dir / "jobs").glob("*.json"), key=lambda p: p.stat().st_mtime)
        return json.loads(jobs[-1].read_text())
