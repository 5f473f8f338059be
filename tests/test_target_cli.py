"""Target commands over pseudo-terminals, and interop with stm32flash."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest

from notedfu.errors import ExitCode
from notedfu.sim.pty import stm32_server
from notedfu.sim.stm32 import Stm32Sim
from notedfu.target.backends import flash_command, run_tool, start_command
from notedfu.errors import TargetError
from tests.conftest import run_cli
from tests.test_target import BASE, app_image

needs_stm32flash = pytest.mark.skipif(shutil.which("stm32flash") is None,
                                      reason="stm32flash is not installed (apt-get install stm32flash)")


def test_sim_stm32_pty_and_flash_in_two_processes(tmp_path):
    """The acceptance run: `notedfu sim stm32 --pty --flash-file F` + `notedfu flash X --target PTY`."""
    image = tmp_path / "app.bin"
    image.write_bytes(app_image(24 * 1024))
    flash_file = tmp_path / "flash.bin"
    server = subprocess.Popen([sys.executable, "-m", "notedfu", "sim", "stm32", "--pty", "--flash-file",
                               str(flash_file), "--time-scale", "0.05"], stdout=subprocess.PIPE, text=True)
    try:
        device = server.stdout.readline().strip()
        info = run_cli("target", "info", "--target", device, "--json")
        facts = json.loads(info.stdout)
        assert facts["pid"] == "0x420" and facts["flash_size"] == 128 * 1024 and facts["bootloader"] == "2.2"
        done = run_cli("flash", str(image), "--target", device)
        assert done.returncode == 0, done.stderr
        assert '"verify_method":"read"' in done.stdout and '"started":true' in done.stdout
        assert flash_file.read_bytes().startswith(image.read_bytes())
        # Started with Go and no reset line: the application runs, the bootloader no longer answers.
        assert "E_TARGET_NO_SYNC" in run_cli("target", "info", "--target", device).stderr
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0


def test_compare_erase_and_verify_count_pages_and_verify_says_how_far_it_got(emulator, tmp_path):
    chip, device, flash_file = emulator(variant="v2")  # no CRC command: the verify reads every page back
    image = tmp_path / "app.bin"
    image.write_bytes(app_image(20 * 1024))
    done = run_cli("flash", str(image), "--target", device, "--json", "--no-run")
    assert done.returncode == 0, done.stderr
    steps = [json.loads(line) for line in done.stdout.splitlines() if '"step"' in line]
    for phase in ("compare", "erase", "verify"):
        counted = [e for e in steps if e.get("phase") == phase]
        assert counted and all(e["bytes"] is None and e["total"] is None for e in counted)  # pages are not bytes
        assert counted[-1]["pages"] == counted[-1]["pages_total"] > 0
    verified = [e["pages"] for e in steps if e.get("phase") == "verify"]
    assert len(verified) >= 3 and verified == sorted(verified)  # progress while it reads back, in order
    writes = [e for e in steps if e.get("phase") == "write"]
    assert writes[-1]["bytes"] == writes[-1]["total"] == 20 * 1024  # bytes where bytes are meant


def test_flash_json_events_and_result(emulator, tmp_path):
    chip, device, flash_file = emulator()
    image = tmp_path / "app.bin"
    image.write_bytes(app_image(6 * 1024))
    done = run_cli("flash", str(image), "--target", device, "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    phases = {e.get("phase") for e in events if e["type"] == "step"}
    assert phases == {"compare", "erase", "write", "verify"}
    result = events[-1]["result"]
    assert result["verify_method"] == "crc" and result["started"] and result["image_bytes"] == 6 * 1024
    assert flash_file.read_bytes().startswith(image.read_bytes())


def test_bad_images_are_refused_before_the_chip_is_touched(emulator, tmp_path):
    chip, device, _ = emulator()
    big = tmp_path / "big.bin"
    big.write_bytes(app_image(200 * 1024))
    done = run_cli("flash", str(big), "--target", device)
    assert done.returncode == ExitCode.TARGET and "E_IMAGE_TOO_LARGE" in done.stderr
    assert chip.stats["erased_pages"] == 0 and chip.writes == 0
    junk = tmp_path / "junk.hex"
    junk.write_text("this is not intel hex\n")
    done = run_cli("flash", str(junk), "--target", device)
    assert done.returncode == ExitCode.USAGE and "E_IMAGE_FILE" in done.stderr
    offset = tmp_path / "app.bin"
    offset.write_bytes(app_image(2048))
    done = run_cli("flash", str(offset), "--target", device, "--address", "0x08004000")
    assert done.returncode == ExitCode.TARGET and "E_IMAGE_NOT_AT_BASE" in done.stderr


def test_target_that_does_not_answer(tmp_path):
    server = stm32_server(Stm32Sim(0x420, time_scale=0.05))
    server.device.running_app = True  # the application runs and ignores the bootloader protocol
    server.start()
    try:
        done = run_cli("target", "info", "--target", server.spec)
        assert done.returncode == ExitCode.TARGET and "E_TARGET_NO_SYNC" in done.stderr
        assert done.stderr.count("\n") == 1
    finally:
        server.stop()


@needs_stm32flash
@pytest.mark.parametrize("variant", ["v2", "v3crc"])
def test_stm32flash_writes_and_verifies_through_the_emulator(emulator, tmp_path, variant):
    """Interop: a third-party AN3155 client drives the emulator like a real chip."""
    chip, device, flash_file = emulator(variant=variant)
    image = tmp_path / "app.bin"
    image.write_bytes(app_image(20 * 1024 + 36))
    # -m 8n1: the pty's ?parity=none (a pty carries no parity bit; the emulator models 8E1 itself).
    assert device.endswith("?parity=none")
    done = subprocess.run(["stm32flash", "-m", "8n1", "-w", str(image), "-v", device.partition("?")[0]],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Wrote and verified address" in done.stdout
    assert flash_file.read_bytes().startswith(image.read_bytes())
    assert chip.stats["read_bytes"] >= 20 * 1024  # stm32flash -v reads every block back


@needs_stm32flash
def test_stm32flash_backend(emulator, tmp_path):
    chip, device, flash_file = emulator()
    image = tmp_path / "app.bin"
    image.write_bytes(app_image(4096))
    done = run_cli("flash", str(image), "--target", f"stm32flash:{device}")
    assert done.returncode == 0, done.stderr
    assert flash_file.read_bytes().startswith(image.read_bytes())
    assert chip.running_app  # -g: stm32flash started the application


@needs_stm32flash
def test_a_backend_gets_the_same_checks_and_honours_or_refuses_every_option(emulator, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from notedfu.update.signature import sign

    chip, device, flash_file = emulator()
    target = f"stm32flash:{device}"  # the pty's ?parity=none: stm32flash -m 8n1
    before = flash_file.read_bytes()
    bad = tmp_path / "not-bootable.bin"
    bad.write_bytes(b"\x00" * 4096)  # no stack pointer in RAM: the ROM path refuses it, so must a backend
    done = run_cli("flash", str(bad), "--target", target)
    assert done.returncode == ExitCode.TARGET and "E_IMAGE_NOT_BOOTABLE" in done.stderr, done.stderr
    for option in (["--preserve", "0x0801f000:0x08020000"], ["--boot0", "rts"], ["--readout-unprotect"]):
        done = run_cli("flash", str(bad), "--target", target, *option)
        assert done.returncode == ExitCode.USAGE and option[0] in done.stderr and "stm32flash" in done.stderr, \
            done.stderr
    assert flash_file.read_bytes() == before and chip.writes == 0  # the tool never ran
    payload = app_image(4096)
    signed = tmp_path / "signed.bin"
    signed.write_bytes(sign(payload, Ed25519PrivateKey.generate()))
    done = run_cli("flash", str(signed), "--target", target, "--no-run")
    assert done.returncode == 0, done.stderr
    flash = flash_file.read_bytes()
    assert flash.startswith(payload) and flash[len(payload):len(payload) + 64] == b"\xff" * 64  # no trailer
    assert not chip.running_app  # --no-run: no -g


@pytest.mark.skipif(shutil.which("st-flash") is not None, reason="st-flash is installed here")
def test_a_missing_tool_names_the_debian_package_that_has_it(tmp_path):
    with pytest.raises(TargetError) as info:
        run_tool(flash_command("st-flash", "", tmp_path / "fw.bin"))
    assert info.value.code == "E_TOOL_MISSING" and "apt-get install stlink-tools" in info.value.message


def test_backend_argument_lists(tmp_path):
    image = tmp_path / "fw.bin"
    assert flash_command("openocd", "interface/stlink.cfg,target/stm32f1x.cfg", image).argv == [
        "openocd", "-f", "interface/stlink.cfg", "-f", "target/stm32f1x.cfg",
        "-c", f"program {{{image}}} 0x08000000 verify reset exit"]
    assert flash_command("dfu-util", "0483:df11", image).argv == [
        "dfu-util", "-d", "0483:df11", "-a", "0", "-s", "0x08000000:leave", "-D", str(image)]
    assert flash_command("st-flash", "", image).argv == ["st-flash", "--reset", "write", str(image), "0x08000000"]
    assert flash_command("stm32flash", "/dev/ttyAMA0?baud=57600", image).argv[:3] == ["stm32flash", "-b", "57600"]
    # Not started afterwards (--no-run): no reset, no Go, no leave.
    assert "reset" not in flash_command("openocd", "target/stm32f1x.cfg", image, run=False).argv[-1]
    assert "-g" not in flash_command("stm32flash", "/dev/ttyAMA0", image, run=False).argv
    assert "0x08000000" in flash_command("dfu-util", "0483:df11", image, run=False).argv
    assert "--reset" not in flash_command("st-flash", "", image, run=False).argv
    # Started on its own (the agent's boot stage): nothing written, only the tool's reset/Go/leave.
    assert start_command("stm32flash", "/dev/ttyAMA0?baud=57600").argv == [
        "stm32flash", "-b", "57600", "-g", "0x08000000", "/dev/ttyAMA0"]
    assert start_command("openocd", "target/stm32f1x.cfg").argv == [
        "openocd", "-f", "target/stm32f1x.cfg", "-c", "init", "-c", "reset run", "-c", "shutdown"]
    assert start_command("dfu-util", "0483:df11").argv == ["dfu-util", "-d", "0483:df11", "-a", "0", "-s",
                                                          "0x08000000:leave"]
    assert start_command("st-flash", "").argv == ["st-flash", "reset"]


def test_backend_failures_are_clear_errors(tmp_path):
    from notedfu.target.backends import ToolRun

    with pytest.raises(TargetError) as info:
        run_tool(ToolRun(["notedfu-no-such-tool", "x"]))
    assert info.value.code == "E_TOOL_MISSING"
    with pytest.raises(TargetError) as info:
        run_tool(ToolRun([sys.executable, "-c", "import sys; print('bad wiring'); sys.exit(3)"]))
    assert info.value.code == "E_TOOL_FAILED" and "exit 3" in info.value.message and "bad wiring" in info.value.message
    done = run_cli("flash", str(tmp_path / "x.bin"), "--target", "openocd:")
    assert done.returncode == ExitCode.USAGE


def test_image_flashed_at_base_is_what_a_later_step_boots(emulator, tmp_path):
    """The flash file is the chip's flash: byte 0 is the vector table the image starts with."""
    chip, device, flash_file = emulator()
    image = app_image(3 * 1024)
    (tmp_path / "a.bin").write_bytes(image)
    assert run_cli("flash", str(tmp_path / "a.bin"), "--target", device).returncode == 0
    data = flash_file.read_bytes()
    assert len(data) == 128 * 1024 and data[:8] == image[:8] and data[3 * 1024:] == b"\xff" * (125 * 1024)
    assert BASE == 0x08000000


def test_two_flashes_of_one_chip_the_second_is_refused_at_once_naming_the_first(emulator, tmp_path):
    chip, device, flash_file = emulator()
    chip.time_scale = 1.0  # real erase and programming times: the first flash takes a while
    image = tmp_path / "big.bin"
    image.write_bytes(app_image(96 * 1024))
    first = subprocess.Popen([sys.executable, "-m", "notedfu", "flash", str(image), "--target", device, "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stdout:
            if json.loads(line).get("phase") == "write":
                break
        second = run_cli("flash", str(image), "--target", device)
        assert second.returncode == ExitCode.LINK and "E_BUSY" in second.stderr, second.stderr
        path = device.partition("?")[0]  # the lock is the device's, whatever options the spec adds
        assert f"target {path} is in use by pid {first.pid} (" in second.stderr and " flash " in second.stderr
    finally:
        rest, errors = first.communicate(timeout=120)
    assert first.returncode == 0, errors
    assert flash_file.read_bytes().startswith(image.read_bytes())  # the first one was never disturbed


def test_a_target_port_that_cannot_be_opened_is_a_target_error(tmp_path):
    image = tmp_path / "app.bin"
    image.write_bytes(app_image(1024))
    done = run_cli("flash", str(image), "--target", "/dev/null")  # exists, but is no serial port
    assert done.returncode == ExitCode.TARGET and "E_TARGET_OPEN" in done.stderr, done.stderr


def test_a_port_nothing_reads_ends_in_a_timeout_not_a_hang(tmp_path):
    import os
    import pty
    import time

    master, slave = pty.openpty()  # the master is never read: writes fill the buffer and block
    try:
        started = time.monotonic()
        done = run_cli("target", "info", "--target", os.ttyname(slave) + "?parity=none", timeout=90)
        assert done.returncode == ExitCode.TARGET, done.stderr
        assert "E_TARGET_TIMEOUT" in done.stderr or "E_TARGET_NO_SYNC" in done.stderr
        assert time.monotonic() - started < 60
        # Without ?parity=none: a kernel that refuses even parity on a pty (EINVAL) gets a clean error that
        # says what to do; one that silently drops it (older kernels) times out as above.
        done = run_cli("target", "info", "--target", os.ttyname(slave), timeout=90)
        assert done.returncode == ExitCode.TARGET, done.stderr
        assert ("E_TARGET_OPEN" in done.stderr and "?parity=none" in done.stderr) or \
            "E_TARGET_TIMEOUT" in done.stderr or "E_TARGET_NO_SYNC" in done.stderr, done.stderr
    finally:
        os.close(master)
        os.close(slave)


def test_a_reader_that_goes_away_does_not_stop_the_flash(emulator, tmp_path):
    chip, device, flash_file = emulator()
    image = tmp_path / "app.bin"
    image.write_bytes(app_image(16 * 1024))
    # notedfu flash --json … | head -c1
    proc = subprocess.Popen([sys.executable, "-m", "notedfu", "flash", str(image), "--target", device, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(1) == b"{"
    proc.stdout.close()
    errors = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, errors
    assert "Traceback" not in errors and "BrokenPipe" not in errors
    assert flash_file.read_bytes().startswith(image.read_bytes())  # the whole image, not an erased page 0


def test_a_board_that_vanishes_mid_flash_is_a_target_error_not_an_internal_one(tmp_path):
    """The emulator's process dies while the flash writes (a USB adapter pulled): the pty reads fail with EIO,
    which pyserial raises as termios.error when it re-applies the line settings; that is E_TARGET_IO (exit 8,
    transient), never E_INTERNAL (the bench caught it)."""
    image = tmp_path / "app.bin"
    image.write_bytes(app_image(32 * 1024))
    server = subprocess.Popen([sys.executable, "-m", "notedfu", "sim", "stm32", "--pty", "--flash-file",
                               str(tmp_path / "flash.bin")], stdout=subprocess.PIPE, text=True)
    try:
        spec = server.stdout.readline().strip()
        flash = subprocess.Popen([sys.executable, "-m", "notedfu", "flash", str(image), "--target", spec, "--json",
                                  "--no-run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in flash.stdout:
            if '"phase":"write"' in line:
                server.kill()  # the board is gone
                break
        rest, stderr = flash.communicate(timeout=60)
    finally:
        server.kill()
        server.wait()
    assert flash.returncode == ExitCode.TARGET, stderr
    assert "E_TARGET_IO" in stderr or "E_TARGET_TIMEOUT" in stderr, stderr
