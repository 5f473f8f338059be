"""The hil/ suite given a rig file (`--rig`), as on real boards: here the boards are the simulators
run as separate programs (`notedfu sim notecard --pty`, `notedfu sim stm32 --pty --gpio`), so the
scenarios cannot look inside them and take the same path real hardware does."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from notedfu.sim.qemu import qemu_available

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def simulators(tmp_path):
    short = Path(tempfile.mkdtemp(prefix="notedfu-hil-"))  # Unix socket paths are limited to 108 bytes
    flash = tmp_path / "flash.bin"
    procs = [subprocess.Popen([sys.executable, "-m", "notedfu", "sim", *args], stdout=subprocess.PIPE, text=True)
             for args in (["notecard", "--pty", "--profile", "usb"],
                          ["stm32", "--pty", "--flash-file", str(flash), "--bootloader", "v3crc",
                           "--time-scale", "0.2", "--gpio", str(short / "gpio.sock")])]
    try:
        ports = [proc.stdout.readline().strip() for proc in procs]
        yield ports[0], ports[1], short / "gpio.sock", flash
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        for leftover in short.iterdir():
            leftover.unlink()
        short.rmdir()


def test_hil_suite_runs_from_a_rig_file(simulators, tmp_path):
    card, chip, gpio, flash = simulators
    console = f'[console]\nport = "qemu:{flash}"\ntimeout = 15\n' if qemu_available() else ""
    rig = tmp_path / "rig.toml"
    rig.write_text(f'[notecard]\nport = "{card}"\n[target]\nport = "{chip}"\nboot0 = "sim-gpio:{gpio}:0"\n'
                   f'reset = "sim-gpio:{gpio}:1"\n{console}[firmware]\ndir = "{REPO / "firmware" / "prebuilt"}"\n')
    # A few scenarios (the whole suite runs on the simulated rig elsewhere): the rig-file path is what is tested.
    chosen = "full_update or holds_wrong or does_not_confirm"
    done = subprocess.run([sys.executable, "-m", "pytest", "hil", "--rig", str(rig), "-n", "0", "-q", "-k", chosen,
                           "-p", "no:cacheprovider", "-rs"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert ("2 passed, 1 skipped" if console else "1 passed, 2 skipped") in summary, done.stdout[-3000:]
    assert "the simulated rig only" in done.stdout  # the wrong-image scenario needs a card that lies


def test_a_rig_file_with_a_wrong_key_is_refused_naming_it(tmp_path):
    rig = tmp_path / "rig.toml"
    rig.write_text('[notecard]\nport = "/dev/null"\n[target]\nport = "/dev/null"\nbot0 = "gpiochip0:17"\n')
    done = subprocess.run([sys.executable, "-m", "pytest", "hil", "--rig", str(rig), "-n", "0", "-q"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode != 0 and "target.bot0" in done.stdout + done.stderr


def test_the_rig_file_is_checked_by_notedfus_own_config_validator(tmp_path):
    from hil.hilrig import RigDescription, RigFileError

    example = RigDescription.load(REPO / "hil" / "rig.example.toml")
    assert (example.target, example.reset, example.confirm_timeout) == ("/dev/ttyAMA0", "!gpiochip0:27", 15.0)
    rig = tmp_path / "rig.toml"
    for body, said in (('[console]\ntimeout = "soon"\n', "console.timeout: must be a positive number"),
                       ('[console]\nbaud = -1\n', "console.baud: must be a positive integer"),
                       ('[wiring]\nx = 1\n', "unknown section [wiring]"),
                       ('', "notecard.port and target.port are required")):
        ports = '[notecard]\nport = "/dev/null"\n[target]\nport = "/dev/null"\n' if body else ""
        rig.write_text(ports + body)
        with pytest.raises(RigFileError, match=re.escape(said)):
            RigDescription.load(rig)
