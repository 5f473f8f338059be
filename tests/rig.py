"""The simulated rig the agent tests share (notedfu.sim.rig), with a fast card and chip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from notedfu.sim.rig import RigSetup, SimulatedRig, demo_image
from notedfu.sim.qemu import qemu_available

needs_qemu = pytest.mark.skipif(not qemu_available(), reason="qemu-system-arm is not installed")


def padded(version: str, size: int = 0) -> bytes:
    """A demo image, padded after its end (never executed) to make transfers and flashes take a while."""
    image = demo_image(version)
    return image + bytes((i * 7 + 3) & 0xFF for i in range(max(0, size - len(image))))


class Rig(SimulatedRig):
    """The simulated rig with test-friendly speeds, and `notedfu update` run against it."""

    def __init__(self, tmp: Path, offered: bytes, installed: bytes, chip_faults: tuple[str, ...] = (),
                 lines: bool = False, card_clock=None, offered_name: str = "firmware.bin", **card_opts) -> None:
        card = {"profile": "usb", "mode": "continuous", "latency": "0.01", "per_kib": "0.005", "ready_delay": "0",
                **card_opts}
        super().__init__(tmp, RigSetup(offered, installed, offered_name, card=card, chip_faults=chip_faults,
                                       chip_time_scale=0.1, chip_baud=921600, lines=lines,
                                       card_clock=card_clock))
        self.tmp = tmp
        self.state = tmp / "state"
        self.offered = offered

    def args(self, *extra: str) -> list[str]:
        wiring = ["--boot0", self.boot0_line, "--reset", self.reset_line] if self.gpio else []
        return [sys.executable, "-m", "notedfu", "update", "--notecard", self.notecard_port, "--target",
                self.target_port, *wiring, "--state-dir", str(self.state), "--json", *extra]

    def update(self, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.args(*extra), capture_output=True, text=True, timeout=120)

    def restart_card_port(self) -> None:
        """A new pty for the same card (the old one was stopped: the card was unplugged)."""
        self.replug_notecard()


@pytest.fixture
def rig(tmp_path):
    made: list[Rig] = []

    def make(offered: bytes | None = None, installed: bytes | None = None, **opts) -> Rig:
        made.append(Rig(tmp_path, padded("1.1.0") if offered is None else offered,
                        padded("1.0.0") if installed is None else installed, **opts))
        return made[-1]

    yield make
    for r in made:
        r.close()


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]




def toml(sections: dict[str, dict]) -> str:
    """A small TOML document (strings, numbers, booleans) for config files in tests."""
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"
