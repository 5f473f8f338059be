"""`notedfu update`: the full cycle over ptys, policies, terminal states, and the kill-point matrix."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from typing import Callable

import pytest

from notedfu.config import ConfigError, load_config
from notedfu.errors import ExitCode
from notedfu.protocol.chips import FLASH_BASE
from notedfu.sim.qemu import boot
from notedfu.update.job import JobStore
from rig import events, needs_qemu, padded

@needs_qemu
def test_full_cycle_flashes_confirms_reports_and_hands_the_card_back(rig):
    r = rig()
    done = r.update("--console", f"qemu:{r.flash_file}", "--pattern", "notedfu-demo {version} booted")
    assert done.returncode == 0, done.stderr
    assert r.flash_file.read_bytes().startswith(r.offered)
    assert r.card.hub_mode == "continuous"
    assert {"stop": True, "status": "firmware 1.1.0 installed"} in r.card.reports
    assert r.card.host_version == "1.1.0"
    job = JobStore(r.state).latest()
    assert job.state == "success" and all(s.state == "done" for s in job.stages.values())
    steps = [e["step"] for e in events(done.stdout) if e["type"] == "step"]
    assert steps.index("transfer") < steps.index("flash") < steps.index("boot") < steps.index("confirm") \
        < steps.index("report")


def test_no_console_skips_confirmation_and_says_so(rig):
    r = rig()
    done = r.update()
    assert done.returncode == 0, done.stderr
    assert "boot confirmation skipped" in done.stdout
    assert JobStore(r.state).latest().stages["confirm"].state == "skipped"
    assert r.chip.app_starts == 1  # started by Go: no reset line on a pty


@needs_qemu
def test_firmware_that_never_prints_its_banner_is_unconfirmed(rig, tmp_path):
    r = rig()
    config = tmp_path / "one-attempt.toml"
    config.write_text("[agent]\nretry_limit = 1\n")
    done = r.update("--console", f"qemu:{r.flash_file}", "--pattern", "this never appears", "--confirm-timeout", "2",
                    "--config", str(config))
    assert done.returncode == ExitCode.UNCONFIRMED, done.stderr
    assert "E_UNCONFIRMED" in done.stderr
    job = JobStore(r.state).latest()
    assert job.state == "unconfirmed" and job.error["stage"] == "confirm"
    assert any(rep.get("err", "").startswith("E_UNCONFIRMED") for rep in r.card.reports)
    assert r.card.hub_mode == "continuous"


def test_events_say_each_stage_once_in_order_with_time_source_and_a_result(rig, tmp_path):
    r = rig()
    done = r.update()
    assert done.returncode == 0, done.stderr
    seen = events(done.stdout)
    assert all(isinstance(e["time"], float) and e["source"] == "NOTECARD" for e in seen)
    assert [e["stage"] for e in seen if e.get("status") == "RUN"] == \
        ["check", "enter_dfu", "transfer", "verify", "exit_dfu", "flash", "boot", "confirm", "report"]
    numbers = [e["number"] for e in seen if e["type"] == "step"]
    assert numbers == sorted(numbers)  # steps never go back
    success = seen[-1]
    assert success["status"] == "SUCCESS" and success["result"]["version"] == "1.1.0"
    assert success["result"]["state"] == "success" and success["result"]["md5"] == seen[0]["md5"]
    # A failure before anything was opened is an event like the others.
    bad = r.update("--boot0", "bogus")
    failure = events(bad.stdout)[-1]
    assert bad.returncode == ExitCode.USAGE and failure["status"] == "FAILURE", bad.stdout
    assert isinstance(failure["time"], float) and failure["source"] and failure["error"]["code"]


def test_same_version_is_up_to_date_and_lower_is_refused(rig):
    r = rig()
    assert r.update().returncode == 0
    r.card.stage(padded("1.1.0"), "demo.bin")
    again = r.update()
    assert again.returncode == ExitCode.UP_TO_DATE
    assert JobStore(r.state).latest().state == "up_to_date"
    writes = r.chip.writes
    r.card.stage(padded("1.0.0"), "old.bin")
    down = r.update()
    assert down.returncode == ExitCode.FAILURE and "E_DOWNGRADE" in down.stderr
    assert r.chip.writes == writes  # refused before the target was touched
    assert any("E_DOWNGRADE" in rep.get("err", "") for rep in r.card.reports)
    r.card.stage(padded("1.1.0"), "demo.bin")
    r.chip.power_on_reset()  # no reset line on a pty: press the board's reset (BOOT0 strapped high)
    forced = r.update("--force")  # forced past the record, but the chip decides: it holds this image
    assert forced.returncode == ExitCode.UP_TO_DATE and r.chip.writes == writes, forced.stderr
    assert JobStore(r.state).latest().unchanged


def test_target_not_answering_fails_cleanly_with_the_image_kept(rig):
    r = rig()
    r.chip.running_app = True  # the application runs and ignores the bootloader, no reset line
    done = r.update()
    assert done.returncode == ExitCode.TRY_LATER and "E_TARGET_NO_SYNC" in done.stderr
    job = JobStore(r.state).latest()
    assert job.state == "processing" and job.error["stage"] == "flash" and job.error["kind"] == "transient"
    assert (r.state / "staging" / f"{job.md5}.bin").read_bytes() == r.offered
    assert r.card.hub_mode == "continuous" and r.card.reports == [] and r.card.dfu_state == "ready"


def test_nothing_offered(rig):
    r = rig()
    r.card.image, r.card.dfu_state = None, "idle"
    assert r.update().returncode == ExitCode.NOT_READY


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    for text, needle in (("[policy]\nmode = 'sometimes'\n", "policy.mode"), ("[nope]\n", "[nope]"),
                         ("[confirm]\ntimeout = -1\n", "confirm.timeout"), ("[target]\nspek = 'x'\n", "target.spek"),
                         ("not toml", "not valid TOML")):
        bad.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(bad)
        assert needle in info.value.message
    good = tmp_path / "good.toml"
    good.write_text("[policy]\nmode = 'manual'\nallow_downgrade = true\n[confirm]\ntimeout = 5\n")
    config = load_config(good)
    assert config.policy.mode == "manual" and config.confirm.timeout == 5.0


# ------------------------------------------------------------------ the kill-point matrix
Predicate = Callable[[dict], bool]


def at_step(step: str, **fields) -> Predicate:
    return lambda e: e["type"] == "step" and e["step"] == step and all(e.get(k) == v for k, v in fields.items())


def at_progress(step: str, percent: float, phase: str | None = None) -> Predicate:
    return lambda e: (e["type"] == "step" and e["step"] == step and (phase is None or e.get("phase") == phase)
                      and (e.get("percent") or 0) >= percent)


KILL_POINTS: dict[str, Predicate] = {
    "start": lambda e: e["type"] == "status" and e["status"] == "START",
    "check": at_step("check", name="checking the offered image and the card"),
    "check-card": at_step("check", name="checking the Notecard"),
    "enter_dfu": at_step("enter_dfu"),
    "transfer-0": at_progress("transfer", 0),
    "transfer-25": at_progress("transfer", 25),
    "transfer-50": at_progress("transfer", 50),
    "transfer-90": at_progress("transfer", 90),
    "verify": at_step("verify"),
    "exit_dfu": at_step("exit_dfu"),
    "flash": at_step("flash", name="flashing the target"),
    "flash-erase": at_progress("flash", 0, "erase"),
    "flash-write-10": at_progress("flash", 10, "write"),
    "flash-write-50": at_progress("flash", 50, "write"),
    "flash-write-90": at_progress("flash", 90, "write"),
    "flash-verify": at_progress("flash", 0, "verify"),
    "flash-done": lambda e: e["type"] == "step" and e["step"] == "flash" and e.get("state") == "done",
    "boot": at_step("boot"),
    "confirm": lambda e: e["type"] == "step" and e["step"] == "confirm",
    "report": at_step("report"),
    "success": lambda e: e["type"] == "status" and e["status"] == "SUCCESS",
}


PAGE_SIZE = 1024  # the STM32F100's flash page: page 0 is the vector-table page, written last
PAGE0_BLOCKS = 5  # 248 bytes after the vector table, three 256-byte blocks, then the 8 vector-table bytes
SIGNALS = ("SIGKILL", "SIGKILL+power", "SIGTERM", "SIGINT")
POINTS = [*KILL_POINTS, *(f"page0-block-{n}" for n in range(1, PAGE0_BLOCKS + 1))]


def interrupt(proc: subprocess.Popen, how: str) -> None:
    os.kill(proc.pid, signal.SIGKILL if how.startswith("SIGKILL") else getattr(signal, how))


def what_boots(flash_file, expected: str = "none") -> str:
    """Boot the board's flash in QEMU: the version whose banner it prints, or "none". Waiting for an expected
    banner ends as soon as it appears (up to 20 s: QEMU starts slowly on a loaded machine); showing that
    nothing boots takes the 1.5 s in which the demo firmware prints its banner."""
    result = boot(flash_file, r"notedfu-demo (\S+) booted", timeout=1.5 if expected == "none" else 20)
    found = re.search(r"notedfu-demo (\S+) booted", result.output)
    return found.group(1) if found else "none"


@needs_qemu
@pytest.mark.parametrize("how", SIGNALS)
@pytest.mark.parametrize("point", POINTS)
def test_killed_or_stopped_at_every_point_the_board_is_whole_and_the_rerun_succeeds(rig, point, how):
    """SIGKILL (and the target's power cut too), SIGTERM and SIGINT at every stage boundary, inside the
    transfer and the flash, and at every Write Memory of page 0 (the vector-table page, written last)."""
    r = rig(offered=padded("1.1.0", 40 * 1024))
    console = ("--console", f"qemu:{r.flash_file}", "--pattern", "notedfu-demo {version} booted")
    proc = subprocess.Popen(r.args(*console), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    hit = []
    if point.startswith("page0-block-"):
        wanted = int(point.rsplit("-", 1)[1])

        def at_block(address: int, length: int) -> str | None:
            if address >= FLASH_BASE + PAGE_SIZE:
                return None
            seen.append(address)
            if len(seen) != wanted:
                return None
            interrupt(proc, how)
            hit.append(r.chip.writes)  # this write still takes effect: the chip had the whole frame
            return "power" if how == "SIGKILL+power" else None
        seen: list[int] = []
        r.chip.on_write = at_block
        proc.stdout.read()
    else:
        for line in proc.stdout:
            if line.startswith("{") and KILL_POINTS[point](json.loads(line)):
                interrupt(proc, how)
                hit.append(point)
                break
        proc.stdout.read()
    code = proc.wait(timeout=60)
    r.chip.on_write = None
    assert hit, f"the run never reached {point}"
    if point.startswith("page0-block-"):  # the host may be gone before the chip's thread wrote that block
        deadline = time.monotonic() + 10
        while r.chip.writes_done < hit[0] and time.monotonic() < deadline:
            time.sleep(0.01)
    if how == "SIGKILL+power" and not point.startswith("page0"):
        r.chip.power_on_reset()  # the board lost power with the host: it restarts (BOOT0 strapped high here)
    flash = r.flash_file.read_bytes()
    # Whatever the moment: the flash holds the old image, the new one, or no reset vector (the vector table
    # is erased first and written last; power cut inside that last write can leave the stack pointer only).
    target = ("old image" if flash.startswith(padded("1.0.0")) else "new image" if flash.startswith(r.offered)
              else "no reset vector" if flash[4:8] == b"\xff" * 4 else "BOOTABLE HALF IMAGE")
    assert target != "BOOTABLE HALF IMAGE"
    expected = {"old image": "1.0.0", "new image": "1.1.0", "no reset vector": "none"}[target]
    boots = what_boots(r.flash_file, expected)
    assert boots == expected, boots
    card_mode = r.card.hub_mode
    if how in ("SIGTERM", "SIGINT"):  # stopped, not killed: the card was handed back before the exit
        # After SUCCESS the work is done: a signal arriving while Python shuts down may end it by default.
        allowed = (0, ExitCode.INTERRUPTED, -getattr(signal, how)) if point == "success" else (ExitCode.INTERRUPTED,)
        assert code in allowed, code
        assert card_mode == "continuous" and not (r.state / "card-mode.json").exists()
    killed_in = JobStore(r.state).current()
    stage = killed_in.next_stage() if killed_in else "-"
    done = r.update(*console)
    job = JobStore(r.state).latest()
    assert job.state == "success", (point, how, done.returncode, done.stderr, job.error)
    assert r.flash_file.read_bytes().startswith(r.offered) and what_boots(r.flash_file, "1.1.0") == "1.1.0"
    assert r.card.hub_mode == "continuous" and r.card.host_version == "1.1.0"
    assert not (r.state / "card-mode.json").exists()
    print(f"MATRIX {how:13} {point:15} exit {code:4} | stage {stage:9} card {card_mode:10} flash {target:18} "
          f"boots {boots:5} | rerun exit {done.returncode} job {job.state} boots 1.1.0 card {r.card.hub_mode}")
