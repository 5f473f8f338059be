"""Gang flashing: several emulated boards on pseudo-terminals, flashed at once by one `notedfu flash`."""

from __future__ import annotations

import json

from notedfu.errors import ExitCode
from notedfu.gang import BoardResult
from notedfu.sim.faults import parse_faults
from notedfu.sim.stm32 import STM32_FAULTS
from notedfu.cli_gang import format_table
from tests.conftest import run_cli
from tests.test_target import app_image


def test_four_boards_one_failing_mid_write_the_others_succeed_and_the_failing_one_is_named(emulator, tmp_path):
    image = app_image(8 * 1024)
    (tmp_path / "app.bin").write_bytes(image)
    boards = [emulator(variant="v2") for _ in range(3)]
    boards.insert(2, emulator(variant="v2", faults=parse_faults(["wprot@3"], STM32_FAULTS)))  # page 3 takes no write
    targets = [arg for _, spec, _ in boards for arg in ("--target", spec)]
    done = run_cli("flash", str(tmp_path / "app.bin"), *targets, "--no-run", "--json")
    assert done.returncode == ExitCode.TARGET, done.stderr
    failing = boards[2][1].partition("?")[0]
    assert f"1 of 4 boards failed: {failing} (E_TARGET_VERIFY, vector table erased)" in done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    per_board = [e for e in events if e.get("board")]
    assert {e["board"] for e in per_board} == {spec.partition("?")[0] for _, spec, _ in boards}
    writes = {e["board"] for e in per_board if e.get("phase") == "write"}
    assert len(writes) == 4  # every board wrote
    result = next(e for e in events if e["type"] == "boards")["boards"]
    assert [r["ok"] for r in result] == [True, True, False, True]
    assert result[2]["vector_table"] == "erased" and result[2]["error"]["code"] == "E_TARGET_VERIFY"
    for i, (chip, _, flash_file) in enumerate(boards):
        held = bytes(chip.flash[:len(image)])
        if i == 2:
            assert held[:8] == b"\xff" * 8  # the failing board cannot boot a partial image
        else:
            assert held == image
    assert events[-1] == {**events[-1], "status": "FAILURE"} and events[-1]["error"]["code"] == "E_GANG"


def test_lines_pair_with_targets_in_order_and_a_board_is_flashed_once(tmp_path, emulator):
    (tmp_path / "app.bin").write_bytes(app_image(4 * 1024))
    _, one, _ = emulator()
    _, two, _ = emulator()
    cases = {
        ("--target", one, "--target", two, "--boot0", "gpiochip0:1", "--boot0", "gpiochip0:2", "--boot0",
         "gpiochip0:3"): "--boot0 was given 3 times for 2 targets",
        ("--target", one, "--target", one): "given more than once",
        ("--target", one, "--target", "sim://stm32?bogus=1"): "--target #2",
    }
    for args, said in cases.items():
        done = run_cli("flash", str(tmp_path / "app.bin"), *args, "--no-run", "--json")
        assert done.returncode == ExitCode.USAGE and said in done.stderr, (args, done.stderr)
    # A line naming each board's own port (rts, dtr, none) fits every board when given once (none here: a
    # pty has no RTS/DTR)
    done = run_cli("flash", str(tmp_path / "app.bin"), "--target", one, "--target", two, "--boot0", "none",
                   "--no-run", "--json")
    assert done.returncode == 0, done.stderr


def test_the_table_names_each_board_its_chip_result_and_seconds():
    table = format_table([BoardResult("/dev/ttyUSB0", True, "STM32F103", 3.21, 64),
                          BoardResult("/dev/ttyUSB1", False, "STM32F103", 1.5, None,
                                      {"code": "E_TARGET_VERIFY", "message": "page 0x08000c00 still wrong"},
                                      "erased")]).splitlines()
    assert table[0].split() == ["board", "chip", "result", "seconds", "pages", "detail"]
    assert table[1].split()[:5] == ["/dev/ttyUSB0", "STM32F103", "ok", "3.21", "64"]
    assert "FAILED" in table[2] and "E_TARGET_VERIFY" in table[2] and "(vector table erased)" in table[2]


def test_ctrl_c_stops_every_board_and_exits_130(emulator, tmp_path):
    """SIGINT in the middle of a gang flash: each board stops where it is safe, the run says so (exit 130,
    E_INTERRUPTED), and no board was left with a bootable half image."""
    import signal
    import subprocess
    import sys

    image = app_image(24 * 1024)
    (tmp_path / "app.bin").write_bytes(image)
    boards = [emulator(variant="v2") for _ in range(2)]
    targets = [arg for _, spec, _ in boards for arg in ("--target", spec)]
    proc = subprocess.Popen([sys.executable, "-m", "notedfu", "flash", str(tmp_path / "app.bin"), *targets,
                             "--no-run", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if '"phase":"write"' in line:
            proc.send_signal(signal.SIGINT)
            break
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert "E_INTERRUPTED" in stderr and "of 2 boards" in stderr
    for chip, _, _ in boards:
        held = bytes(chip.flash[:len(image)])
        assert held == image or held[:8] == b"\xff" * 8  # finished, or its vector table still erased
