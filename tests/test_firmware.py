"""The demo firmware: committed images, reproducible builds, and a real boot in QEMU after flashing."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from notedfu.target.plan import FlashOptions
from notedfu.target.image import load_image
from notedfu.sim.qemu import boot, qemu_available
from notedfu.target.rom import RomBootloaderDriver

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
VERSIONS = ("1.0.0", "1.1.0")


def firmware_info(image: bytes) -> dict:
    start = image.index(b"firmware::info:") + len(b"firmware::info:")
    return json.loads(image[start:image.index(b"}", start) + 1])


@pytest.mark.parametrize("version", VERSIONS)
def test_prebuilt_images_carry_their_version_and_a_bootable_vector_table(version):
    image = (FIRMWARE / "prebuilt" / f"demo-{version}.bin").read_bytes()
    stack, reset = struct.unpack_from("<II", image)
    assert 0x20000000 < stack <= 0x20002000 and reset & 1 and 0x08000000 < reset < 0x08000000 + len(image)
    assert firmware_info(image)["version"] == version
    assert f"notedfu-demo {version} booted".encode() in image


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None,
                    reason="arm-none-eabi-gcc is not installed (apt-get install gcc-arm-none-eabi)")
def test_firmware_rebuilds_byte_identical(tmp_path):
    copy = tmp_path / "firmware"  # another directory: paths must not leak into the images
    shutil.copytree(FIRMWARE, copy, ignore=shutil.ignore_patterns("build"))
    done = subprocess.run(["make", "-C", str(copy), "check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(line.split(":")[0] for line in done.stdout.splitlines() if "reproducible" in line) == \
        ["demo-1.0.0.bin", "demo-1.1.0.bin", "demo-1.2.0-broken.bin", "sensor-2.0.0.bin", "sensor-2.0.1.bin"]
    bluepill = subprocess.run(["make", "-C", str(copy), "BOARD=bluepill"], capture_output=True, text=True,
                              timeout=120)
    assert bluepill.returncode == 0, bluepill.stderr
    assert b"booted on bluepill" in (copy / "build" / "bluepill" / "demo-1.1.0.bin").read_bytes()


SENSOR_VERSIONS = ("2.0.0", "2.0.1")


@pytest.mark.parametrize("version", SENSOR_VERSIONS)
def test_the_sensor_firmware_is_a_realistic_size_and_carries_its_version(version):
    image = (FIRMWARE / "prebuilt" / f"sensor-{version}.bin").read_bytes()
    assert 60 * 1024 <= len(image) <= 128 * 1024  # newlib, printf, a shell and tables: a product's size
    assert firmware_info(image)["version"] == version and firmware_info(image)["product"] == "notedfu-sensor"


def test_the_sensor_pair_differs_by_a_fix_in_one_function_and_its_version():
    """What a delta update is for: most pages identical, the fix moving only the code after it."""
    old, new = ((FIRMWARE / "prebuilt" / f"sensor-{v}.bin").read_bytes() for v in SENSOR_VERSIONS)
    pages = [at for at in range(0, max(len(old), len(new)), 1024) if old[at:at + 1024] != new[at:at + 1024]]
    assert 1 <= len(pages) <= 10 and pages[0] > 32 * 1024, pages  # the libraries in front never move


@pytest.mark.skipif(not qemu_available(), reason="qemu-system-arm is not installed (apt-get install qemu-system-arm)")
@pytest.mark.parametrize("version", SENSOR_VERSIONS)
def test_the_sensor_firmware_boots_in_qemu_and_answers_its_shell(version, tmp_path):
    """The banner, then a shell command over the same console: 2.0.0 rounds every reading down to a whole
    degree (the bug), 2.0.1 interpolates (the fix)."""
    import re
    import time

    from notedfu.ports import serial_for_url

    flash = tmp_path / "flash.bin"
    flash.write_bytes((FIRMWARE / "prebuilt" / f"sensor-{version}.bin").read_bytes())
    console = serial_for_url(f"qemu://{flash}", timeout=0.2)
    try:
        output, deadline = b"", time.monotonic() + 20
        while b"booted on qemu-vldiscovery" not in output and time.monotonic() < deadline:
            output += console.read(4096)
        assert f"notedfu-sensor {version} booted on qemu-vldiscovery".encode() in output, output
        console.write(b"raw 2\r")
        while not re.search(rb"= -?\d+\.\d+ C", output) and time.monotonic() < deadline:
            output += console.read(4096)
    finally:
        console.close()
    celsius = re.search(rb"channel 2: \d+ counts = (-?\d+\.\d+) C", output)
    assert celsius, output
    whole = float(celsius.group(1)) == int(float(celsius.group(1)))
    assert whole == (version == "2.0.0"), celsius.group(0)


def test_the_broken_image_boots_but_carries_no_banner():
    image = (FIRMWARE / "prebuilt" / "demo-1.2.0-broken.bin").read_bytes()
    stack, reset = struct.unpack_from("<II", image)
    assert 0x20000000 < stack <= 0x20002000 and reset & 1 and firmware_info(image)["version"] == "1.2.0"
    assert b"booted on" not in image


@pytest.mark.skipif(not qemu_available(), reason="qemu-system-arm is not installed (apt-get install qemu-system-arm)")
def test_flashed_update_boots_in_qemu(tmp_path):
    flash_file = tmp_path / "flash.bin"
    for version in VERSIONS:  # 1.0.0 first, then the update to 1.1.0 over it
        with RomBootloaderDriver(f"sim://stm32?flash_file={flash_file}&bootloader=v3crc&time_scale=0.05") as target:
            target.connect()
            target.flash(load_image(FIRMWARE / "prebuilt" / f"demo-{version}.bin", 0x08000000), FlashOptions())
        result = boot(flash_file, rf"notedfu-demo {version} booted on qemu-vldiscovery", timeout=20)
        assert result.matched, result.output
    assert not boot(flash_file, r"notedfu-demo 1\.0\.0", timeout=2).matched


@pytest.mark.skipif(not qemu_available(), reason="qemu-system-arm is not installed (apt-get install qemu-system-arm)")
def test_a_notedfu_killed_outright_takes_its_qemu_board_with_it():
    """QEMU runs in its own session (a Ctrl-C meant for notedfu must not kill it), so only the kernel's
    parent-death signal stops it when notedfu dies by SIGKILL: before, every killed run left one behind."""
    import os
    import signal
    import sys
    import time

    flash = FIRMWARE / "prebuilt" / "demo-1.0.0.bin"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from notedfu.ports import serial_for_url\n"
        f"port = serial_for_url('qemu://{flash}')\n"
        "print(port._process.pid, flush=True); time.sleep(120)")], stdout=subprocess.PIPE, text=True)
    qemu = int(holder.stdout.readline())
    os.kill(qemu, 0)  # running
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(qemu, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(qemu, signal.SIGKILL)
    raise AssertionError(f"QEMU (pid {qemu}) outlived the notedfu that started it")
