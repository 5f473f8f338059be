"""`notedfu demo`, as a newcomer runs it: to a confirmed boot in QEMU, without QEMU, and stopped by Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import run_cli
from notedfu.errors import ExitCode
from rig import events, needs_qemu


def summary_of(stdout: str) -> dict:
    lines = [e for e in events(stdout) if e["type"] == "summary"]
    assert len(lines) == 1, stdout
    return lines[0]


@needs_qemu
def test_demo_updates_the_simulated_rig_to_a_confirmed_1_1_0_boot():
    done = run_cli("demo", "--json")
    assert done.returncode == 0, done.stderr
    summary = summary_of(done.stdout)
    assert summary["outcome"] == "success"
    assert [row["state"] for row in summary["stages"]] == ["done"] * 9
    assert summary["boot"] == {"checked": True, "line": "notedfu-demo 1.1.0 booted on qemu-vldiscovery",
                               "skipped": None}
    assert summary["target"]["running"]  # started by NRST on the simulated GPIO chip
    assert summary["target"]["holds"] == "1.1.0"
    assert summary["notehub"] == [{"stop": True, "status": "firmware 1.1.0 installed"}, {"version": "1.1.0"}]
    assert summary["notecard"]["mode_after"] == summary["notecard"]["mode_before"] == "periodic"
    transfer = next(row for row in summary["stages"] if row["stage"] == "transfer")
    assert transfer["bytes"] == 428 and transfer["rate"] > 0


@needs_qemu
def test_demo_delta_installs_the_sensor_fix_from_a_small_update_file_writing_only_the_changed_pages():
    done = run_cli("demo", "--delta", "--json", "--profile", "usb")
    assert done.returncode == 0, done.stderr
    summary = summary_of(done.stdout)
    assert summary["outcome"] == "success" and summary["target"]["holds"] == "2.0.1"
    assert summary["boot"]["line"] == "notedfu-sensor 2.0.1 booted on qemu-vldiscovery"
    transfer = next(row for row in summary["stages"] if row["stage"] == "transfer")
    assert transfer["bytes"] < 2048  # the update file, not the 66 KiB image
    assert summary["target"]["pages_written"] == 9 and summary["target"]["pages_unchanged"] == 58
    assert summary["notehub"] == [{"stop": True, "status": "firmware 2.0.1 installed"}, {"version": "2.0.1"}]


def test_demo_without_qemu_still_updates_and_says_how_to_get_the_boot_check(tmp_path):
    done = run_cli("demo", "--workdir", str(tmp_path / "demo"), env={"PATH": str(Path(sys.executable).parent)})
    assert done.returncode == 0, done.stderr
    assert "the boot check is skipped: qemu-system-arm is not installed (sudo apt-get install qemu-system-arm" \
        in done.stdout
    assert "confirm    skipped" in done.stdout and "flash holds 1.1.0" in done.stdout
    assert (tmp_path / "demo" / "flash.bin").read_bytes().startswith(
        (Path(__file__).parent.parent / "firmware" / "prebuilt" / "demo-1.1.0.bin").read_bytes())


def test_ctrl_c_during_the_transfer_hands_the_card_back_and_exits_130():
    proc = subprocess.Popen([sys.executable, "-m", "notedfu", "demo", "--json", "--profile", "uart9600"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        event = json.loads(line)
        if event["type"] == "step" and event["step"] == "transfer":
            os.kill(proc.pid, signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED
    summary = summary_of("".join(out) + rest)
    assert summary["outcome"] == "interrupted"
    assert summary["notecard"]["mode_after"] == "periodic" and summary["target"]["holds"] == "1.0.0"
    assert "handed back" in summary["next"] and "notedfu demo" in summary["next"]  # says what to do now


def test_demo_with_a_firmware_directory_that_lacks_the_images_is_a_usage_error(tmp_path):
    done = run_cli("demo", "--firmware", str(tmp_path))
    assert done.returncode == ExitCode.USAGE and "E_IMAGE_FILE" in done.stderr
