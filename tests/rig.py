"""The simulated rig the agent tests share: a simulated Notecard and an emulated STM32 on ptys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from notedfu.sim.cardport import CardPort
from notedfu.sim.pty import PtyServer
from notedfu.sim.faults import parse_faults
from notedfu.sim.stm32 import STM32_FAULTS, Stm32Sim
from notedfu.target.qemu import qemu_available

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware" / "prebuilt"
needs_qemu = pytest.mark.skipif(not qemu_available(), reason="qemu-system-arm is not installed")


def padded(version: str, size: int = 0) -> bytes:
    """A demo image, padded after its end (never executed) to make transfers and flashes take a while."""
    image = (FIRMWARE / f"demo-{version}.bin").read_bytes()
    return image + bytes((i * 7 + 3) & 0xFF for i in range(max(0, size - len(image))))


class Rig:
    """A simulated Notecard and an emulated STM32 on ptys, in this process so tests can look inside."""

    def __init__(self, tmp: Path, sim, offered: bytes, installed: bytes, chip_faults: tuple[str, ...] = (),
                 **card_opts) -> None:
        self.tmp = tmp
        self.card, _ = sim(image_bytes=offered, **{"mode": "continuous", "latency": "0.01", "per_kib": "0.005",
                                                    **card_opts})
        self.flash_file = tmp / "flash.bin"
        self.flash_file.write_bytes(installed + b"\xff" * (128 * 1024 - len(installed)))
        self.chip = Stm32Sim(0x420, "v3crc", flash_file=self.flash_file, time_scale=0.1,
                             faults=parse_faults(list(chip_faults), STM32_FAULTS))
        self.servers = [PtyServer(CardPort(self.card, self.card.link)).start(), PtyServer(self.chip).start()]
        self.state = tmp / "state"
        self.offered = offered

    def args(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "notedfu", "update", "--notecard", self.servers[0].path, "--target",
                self.servers[1].path, "--state-dir", str(self.state), "--json", *extra]

    def update(self, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.args(*extra), capture_output=True, text=True, timeout=120)

    def restart_card_port(self) -> None:
        """A new pty for the same card (the old one was stopped: the card was unplugged)."""
        self.servers[0] = PtyServer(CardPort(self.card, self.card.link)).start()

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.chip.close()


@pytest.fixture
def rig(tmp_path, sim):
    made: list[Rig] = []

    def make(offered: bytes | None = None, installed: bytes | None = None, **opts) -> Rig:
        made.append(Rig(tmp_path, sim, padded("1.1.0") if offered is None else offered,
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
