"""The agent's policies and failures: signatures, manual approval, local images, Outboard DFU,
and a failure in each stage — each through `notedfu update` over ptys."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import run_cli
from notedfu.sim.clock import ManualClock
from notedfu.errors import ExitCode
from notedfu.update.job import JobStore
from notedfu.update.signature import TRAILER_SIZE
from rig import events, needs_qemu, padded, toml


def keypair(tmp_path):
    made = run_cli("keygen", str(tmp_path / "signing.pem"))
    assert made.returncode == 0, made.stderr
    public = made.stdout.split('public_key = "')[1].split('"')[0]
    return tmp_path / "signing.pem", public


def signed(tmp_path, key, data: bytes) -> bytes:
    path = tmp_path / "to-sign.bin"
    path.write_bytes(data)
    done = run_cli("sign", str(path), "--key", str(key))
    assert done.returncode == 0, done.stderr
    return path.read_bytes()


# ------------------------------------------------------------------ signatures
def test_signed_image_is_flashed_without_its_trailer(rig, tmp_path):
    key, public = keypair(tmp_path)
    image = signed(tmp_path, key, padded("1.1.0"))
    assert len(image) == len(padded("1.1.0")) + TRAILER_SIZE
    r = rig(offered=image)
    config = tmp_path / "agent.toml"
    config.write_text(toml({"policy": {"public_key": public}}))
    done = r.update("--config", str(config))
    assert done.returncode == 0, done.stderr
    flash = r.flash_file.read_bytes()
    assert flash.startswith(padded("1.1.0"))
    assert flash[len(padded("1.1.0")):len(image)] == b"\xff" * TRAILER_SIZE  # the trailer never reached the chip
    assert r.card.host_version == "1.1.0"


@pytest.mark.parametrize("how", ["unsigned", "other key", "tampered"])
def test_with_a_key_configured_a_badly_signed_image_never_reaches_the_target(rig, tmp_path, how):
    key, public = keypair(tmp_path)
    if how == "unsigned":
        image = padded("1.1.0")
    elif how == "other key":
        (tmp_path / "other").mkdir()
        other, _ = keypair(tmp_path / "other")
        image = signed(tmp_path, other, padded("1.1.0"))
    else:
        good = bytearray(signed(tmp_path, key, padded("1.1.0")))
        good[100] ^= 0x01  # one bit of code changed after signing
        image = bytes(good)
    r = rig(offered=image)
    config = tmp_path / "agent.toml"
    config.write_text(toml({"policy": {"public_key": public}}))
    done = r.update("--config", str(config))
    assert done.returncode == ExitCode.SIGNATURE, done.stderr
    assert "E_SIGNATURE" in done.stderr
    assert r.chip.writes == 0 and r.flash_file.read_bytes().startswith(padded("1.0.0"))
    job = JobStore(r.state).latest()
    assert job.state == "fail" and job.error["stage"] == "verify" and job.stages["flash"].state == "skipped"
    assert (r.state / "staging" / f"{job.md5}.bin").read_bytes() == image  # the staged image survives
    assert any(rep.get("err", "").startswith("E_SIGNATURE") for rep in r.card.reports)
    assert r.card.hub_mode == "continuous"


def test_a_malformed_public_key_is_a_config_error_naming_the_key(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text(toml({"policy": {"public_key": "bm90IGEga2V5"}}))
    done = run_cli("update", "--config", str(config), "--notecard", "sim://notecard")
    assert done.returncode == ExitCode.USAGE and "policy.public_key" in done.stderr and "E_CONFIG" in done.stderr


def test_keygen_never_overwrites_a_key(tmp_path):
    key, _ = keypair(tmp_path)
    before = key.read_bytes()
    again = run_cli("keygen", str(key))
    assert again.returncode == ExitCode.USAGE and "E_KEY_EXISTS" in again.stderr
    assert key.read_bytes() == before and (key.stat().st_mode & 0o777) == 0o600


# ------------------------------------------------------------------ manual policy
def test_manual_policy_waits_for_an_approval_naming_that_image(rig):
    r = rig()
    waiting = r.update("--policy", "manual")
    assert waiting.returncode == ExitCode.AWAITING_APPROVAL, waiting.stderr
    pending = JobStore(r.state).pending()
    assert pending["version"] == "1.1.0" and r.chip.writes == 0 and r.card.hub_mode == "continuous"
    other = "0" * 32
    assert run_cli("approve", other, "--state-dir", str(r.state), "--socket", str(r.tmp / "none.sock")).returncode == 0
    assert r.update("--policy", "manual").returncode == ExitCode.AWAITING_APPROVAL  # approved a different image
    bad = run_cli("approve", "not-an-md5", "--state-dir", str(r.state), "--socket", str(r.tmp / "none.sock"))
    assert bad.returncode == ExitCode.USAGE and "E_BAD_MD5" in bad.stderr
    ok = run_cli("approve", pending["md5"], "--state-dir", str(r.state), "--socket", str(r.tmp / "none.sock"))
    assert ok.returncode == 0, ok.stderr
    done = r.update("--policy", "manual")
    assert done.returncode == 0, done.stderr
    assert r.flash_file.read_bytes().startswith(r.offered)
    assert JobStore(r.state).pending() == {}


# ------------------------------------------------------------------ local images, Outboard DFU
def test_local_image_skips_the_card_download_and_reports_the_version(rig, tmp_path):
    r = rig()
    image = tmp_path / "local.bin"
    image.write_bytes(padded("1.1.0"))
    done = r.update("--image", str(image))
    assert done.returncode == 0, done.stderr
    job = JobStore(r.state).latest()
    assert job.source == "LOCAL" and job.version == "1.1.0"
    assert [job.stages[n].state for n in ("enter_dfu", "transfer", "exit_dfu")] == ["skipped"] * 3
    assert r.flash_file.read_bytes().startswith(padded("1.1.0"))
    assert r.card.host_version == "1.1.0" and not any("stop" in rep for rep in r.card.reports)
    assert r.card.dfu_state == "ready"  # the card's own offer is untouched


def test_outboard_dfu_is_warned_about_or_switched_off(rig, tmp_path):
    r = rig()
    r.card.card_dfu["on"] = True
    warned = r.update()
    assert warned.returncode == 0
    assert any("Outboard DFU is on" in e.get("text", "") for e in events(warned.stdout))
    assert r.card.card_dfu["on"] is True
    r.card.stage(padded("1.1.0"), "again.bin")
    config = tmp_path / "agent.toml"
    config.write_text(toml({"policy": {"outboard_dfu": "disable"}}))
    r.chip.power_on_reset()
    off = r.update("--config", str(config), "--force")
    assert off.returncode == ExitCode.UP_TO_DATE, off.stderr  # forced, but the chip already holds it
    assert r.card.card_dfu["on"] is False


# ------------------------------------------------------------------ a failure in each stage
def test_check_fails_on_a_downgrade(rig):
    r = rig(offered=padded("1.0.0"))
    JobStore(r.state).set_installed("1.1.0", "0" * 32)
    done = r.update()
    assert done.returncode == ExitCode.FAILURE and "E_DOWNGRADE" in done.stderr
    job = JobStore(r.state).latest()
    assert job.error["stage"] == "check" and job.stages["transfer"].state == "skipped"
    assert r.chip.writes == 0


FAILING_STAGES = [  # a transient cause in each stage that can have one
    ("enter_dfu", {"ready_delay": "2.5"}, (), "E_DFU_NOT_READY"),
    ("transfer", {"fault": "io+"}, (), "E_NOTECARD_IO"),
    ("flash", {}, ("wprot@0",), "E_TARGET_PROTECTED"),
    ("boot", {}, ("nogo",), "E_TARGET"),
]


@pytest.mark.parametrize("stage, card_opts, chip_faults, code", FAILING_STAGES)
def test_a_transient_failure_keeps_both_images_tells_notehub_nothing_and_the_next_attempt_finishes(
        rig, tmp_path, stage, card_opts, chip_faults, code):
    clock = ManualClock()  # the card's own timers: its DFU storage powers up only when the test says so
    r = rig(chip_faults=chip_faults, card_clock=clock, **card_opts)
    config = tmp_path / "agent.toml"
    config.write_text(toml({"notecard": {"ready_timeout": 1.0}}))
    done = r.update("--config", str(config))
    assert done.returncode == ExitCode.TRY_LATER, done.stderr
    job = JobStore(r.state).current()
    assert job.state == "processing" and job.error["stage"] == stage and job.error["code"].startswith(code), job.error
    assert job.error["kind"] == "transient" and job.stages[stage].state == "error" and job.retry_at > time.time()
    failure = [e for e in events(done.stdout) if e.get("status") == "FAILURE"][-1]
    assert failure["failure"] == "transient" and failure["retry_at"] == pytest.approx(job.retry_at, abs=0.01)
    assert r.card.reports == []  # no dfu.status stop: the card still holds the image, ready
    assert r.card.dfu_state == "ready" and r.card.image == r.offered
    assert r.card.hub_mode == "continuous" and not (r.state / "card-mode.json").exists()
    assert (r.state / "staging").exists()
    # The cause goes away (the card finishes powering its DFU storage; faults clear); the next attempt
    # goes on from the failed stage and finishes.
    clock.advance(3.0)
    r.card.config.faults.clear()
    r.chip.faults.clear()
    r.chip.write_protected.clear()
    again = r.update("--config", str(config))
    assert again.returncode == 0, again.stderr
    assert JobStore(r.state).latest().id == job.id and JobStore(r.state).latest().state == "success"
    assert r.card.host_version == "1.1.0" and {"stop": True, "status": "firmware 1.1.0 installed"} in r.card.reports


def test_a_transient_failure_becomes_permanent_when_the_retry_budget_is_spent(rig, tmp_path):
    r = rig(chip_faults=("wprot@0",))
    config = tmp_path / "agent.toml"
    config.write_text(toml({"agent": {"retry_limit": 2, "retry_backoff": 0.1}}))
    first = r.update("--config", str(config))
    assert first.returncode == ExitCode.TRY_LATER and r.card.reports == [], first.stderr
    second = r.update("--config", str(config))
    assert second.returncode == ExitCode.TARGET, second.stderr
    job = JobStore(r.state).latest()
    assert job.state == "fail" and job.attempts == 2 and job.error["kind"] == "permanent"
    assert "gave up after 2 attempts" in job.error["message"]
    assert [rep for rep in r.card.reports if rep.get("stop")] == \
        [{"stop": True, "err": f"E_TARGET_PROTECTED: {job.error['message']}"[:200]}]  # reported once


def test_a_card_that_cannot_be_handed_back_at_exit_dfu_is_handed_back_before_the_report(rig):
    r = rig(fault=["nohandback+"])  # from the first chunk on, hub.set cannot take the card out of DFU mode
    done = r.update("--timeout", "2")
    assert done.returncode in (ExitCode.LINK, ExitCode.CARD), done.stderr
    assert any("could not hand the Notecard back" in e.get("text", "") for e in events(done.stdout))
    assert r.flash_file.read_bytes().startswith(r.offered)  # the verified image was flashed all the same
    job = JobStore(r.state).current()
    assert job is not None and job.stages["exit_dfu"].state == "done" and job.stages["report"].state == "error"
    assert r.card.hub_mode == "dfu" and (r.state / "card-mode.json").exists()
    r.card.config.faults.clear()  # the card recovers
    again = r.update()
    assert again.returncode == 0, again.stderr
    assert r.card.hub_mode == "continuous" and not (r.state / "card-mode.json").exists()
    assert JobStore(r.state).latest().state == "success" and r.card.host_version == "1.1.0"


@needs_qemu
def test_report_failure_keeps_the_job_open_and_the_next_run_reports(rig):
    r = rig()
    console = ("--console", f"qemu:{r.flash_file}", "--pattern", "notedfu-demo {version} booted")
    proc = subprocess.Popen(r.args(*console, "--timeout", "2"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        event = json.loads(line)
        if event["type"] == "step" and event["step"] == "confirm":
            r.servers[0].stop()  # the Notecard is unplugged while the new firmware boots
            break
    proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.LINK
    job = JobStore(r.state).current()
    assert job is not None and job.stages["confirm"].state == "done" and job.stages["report"].state == "error"
    assert r.card.host_version is None
    r.restart_card_port()
    done = r.update(*console)
    assert done.returncode == 0, done.stderr
    assert JobStore(r.state).latest().state == "success" and r.card.host_version == "1.1.0"
    assert {"stop": True, "status": "firmware 1.1.0 installed"} in r.card.reports


def test_serial_console_confirmation_sees_the_banner_and_times_out_without_it():
    import os
    import threading
    import time

    from notedfu.update.confirm import watch_console

    master, slave = os.openpty()
    console = os.ttyname(slave)

    booted = threading.Event()

    def boot_log() -> None:  # the firmware repeats its banner (the demo's: every 2 s), whenever we look
        os.write(master, b"\r\nreset\r\n")
        while not booted.wait(0.05):
            os.write(master, b"notedfu-demo 1.1.0 booted on board\r\n")

    writer = threading.Thread(target=boot_log)
    writer.start()
    try:
        assert watch_console(console, r"notedfu-demo 1\.1\.0 booted", timeout=5)
        started = time.monotonic()
        assert not watch_console(console, r"notedfu-demo 1\.2\.0 booted", timeout=0.5)
        assert time.monotonic() - started >= 0.5
    finally:
        booted.set()
        writer.join()
        os.close(master)
        os.close(slave)


def test_preserved_regions_in_the_config_are_never_erased(rig, tmp_path):
    r = rig(offered=padded("1.1.0", 120 * 1024))  # reaches into the last pages of the 128 KiB chip
    config = tmp_path / "agent.toml"
    config.write_text(toml({"target": {"preserve": ["0x0801D800:0x08020000"]}}))
    done = r.update("--config", str(config))
    assert done.returncode == ExitCode.TARGET and "E_IMAGE_OVERLAPS_PRESERVED" in done.stderr, done.stderr
    assert r.chip.writes == 0 and r.flash_file.read_bytes().startswith(padded("1.0.0"))
    config.write_text(toml({"target": {"preserve": ["0x0801E000"]}}))
    bad = run_cli("update", "--config", str(config), "--notecard", "sim://notecard")
    assert bad.returncode == ExitCode.USAGE and "target.preserve" in bad.stderr


# ------------------------------------------------------------------ external tool backends
@pytest.mark.skipif(__import__("shutil").which("stm32flash") is None, reason="stm32flash is not installed")
def test_the_agent_flashes_through_a_backend_spec_and_refuses_what_it_cannot_honour(rig, tmp_path):
    r = rig()
    target = f"stm32flash:{r.target_port}"  # the pty's ?parity=none: stm32flash -m 8n1
    argv = [a if a != r.target_port else target for a in r.args()]
    config = tmp_path / "preserve.toml"
    config.write_text(toml({"target": {"preserve": ["0x0801f000:0x08020000"]}}))
    refused = subprocess.run(argv + ["--config", str(config)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == ExitCode.USAGE and "target.preserve" in refused.stderr, refused.stderr
    assert r.card.hub_mode == "continuous" and not r.card.reports  # checked before the card was touched
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # Flashed without -g, then started by the boot stage (the driver's start: `stm32flash -g` alone).
    assert r.flash_file.read_bytes().startswith(r.offered) and r.chip.running_app
    job = JobStore(r.state).latest()
    assert job.state == "success" and job.stages["boot"].state == "done" and r.card.host_version == "1.1.0"
    assert "cannot read the chip back" in done.stdout
