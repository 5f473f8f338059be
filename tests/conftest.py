"""Shared fixtures: simulated Notecards (in-process, named) and their specs."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from notedfu.bench import make_image
from notedfu.notecard.dfu import Downloader, FetchOptions, FetchResult
from notedfu.notecard.link import open_notecard
from notedfu.notecard.staging import Staging
from notedfu.sim import registry
from notedfu.sim.clock import WALL, ManualClock
from notedfu.sim.notecard import NotecardSim, card_from_options
from notedfu.sim.pty import stm32_server
from notedfu.sim.stm32 import Stm32Sim

pytest_plugins = ["rig"]  # the simulated rig fixture (tests/rig.py)

# A fast card, ready at once: tests exercise logic, benches measure speed.
FAST = {"latency": "0.005", "per_kib": "0.001", "ready_delay": "0"}


_names = itertools.count()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTECARD_SERIAL_LOCK_PATH", str(tmp_path / "serial.lock"))
    monkeypatch.setenv("NOTEDFU_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("NOTEDFU_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def image() -> bytes:
    """A 40,000-byte image: not a multiple of any chunk size."""
    return make_image(40_000, seed=7)


SimFactory = Callable[..., tuple[NotecardSim, str]]


@pytest.fixture
def sim(tmp_path: Path, image: bytes) -> SimFactory:
    """Make a named simulated card; returns (card, serial spec). ``i2c=True`` gives an I2C spec."""
    made: list[str] = []

    def make(*, i2c: bool = False, image_bytes: bytes | None = None, clock: ManualClock | None = None,
             wire_clock: ManualClock | None = None, **opts: Any) -> tuple[NotecardSim, str]:
        name = f"test{next(_names)}"
        path = tmp_path / f"{name}.bin"
        path.write_bytes(image if image_bytes is None else image_bytes)
        options: dict[str, Any] = {**FAST, "image": str(path), "profile": "i2c400k" if i2c else "usb"}
        options.update({k: (v if isinstance(v, list) else str(v)) for k, v in opts.items()})
        card = card_from_options(options, state_clock=clock, clock=wire_clock or WALL)
        registry.register("notecard", name, card)
        made.append(name)
        return card, (f"i2c:sim://notecard?name={name}" if i2c else f"sim://notecard?name={name}")

    yield make
    for name in made:
        registry.forget("notecard", name)


def fetch(spec: str, state_dir: Path, *, timeout: float = 3.0, **options: Any) -> FetchResult:
    """One in-process fetch with test-friendly polling."""
    options.setdefault("ready_poll", 0.02)
    client = open_notecard(spec, timeout=timeout)
    try:
        return Downloader(client, Staging(state_dir), options=FetchOptions(**options)).fetch()
    finally:
        client.close()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m notedfu ARGS`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "notedfu", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def emulator(tmp_path: Path):
    """An emulated chip on a pty in this process, its flash in a file."""
    made = []

    def make(**options: Any) -> tuple[Stm32Sim, str, Path]:
        flash_file = tmp_path / f"flash{len(made)}.bin"
        chip = Stm32Sim(0x420, options.pop("variant", "v3crc"), flash_file=flash_file, time_scale=0.05, **options)
        server = stm32_server(chip).start()
        made.append((server, chip))
        return chip, server.spec, flash_file

    yield make
    for server, chip in made:
        server.stop()
        chip.close()
