"""Update scenarios a rig runs many times a day, on real boards (``--rig FILE``) or the simulated rig.

Each scenario starts with the board running firmware 1.0.0 (flashed directly),
stages an image on the Notecard with ``notedfu sideload`` — as Notehub would
deliver it — and runs ``notedfu update``; it checks the exit code, the events,
the job the agent saved, and the card through ``notedfu status``. On the
simulated rig it also looks inside: the emulated chip's flash, what the card
told Notehub.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from notedfu.errors import ExitCode
from notedfu.sim.faults import parse_faults

from hil.hilrig import REPO, HilRig


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def padded(image: bytes, size: int) -> bytes:
    """``image`` followed by filler (never executed) up to ``size`` bytes."""
    return image + bytes((i * 7 + 3) & 0xFF for i in range(max(0, size - len(image))))


def offer(hil: HilRig, tmp_path: Path, name: str, data: bytes) -> Path:
    """Side-load ``data``; the card must then offer exactly it."""
    path = write(tmp_path, name, data)
    done = hil.sideload(path)
    assert done.returncode == 0, done.stderr
    status = hil.card_status()
    assert status["dfu"]["mode"] == "ready" and status["image"]["length"] == len(data)
    return path


def flash_holds(hil: HilRig, data: bytes) -> bool:
    """On the simulated rig, whether the chip's flash starts with ``data`` (real boards: trusted to the agent)."""
    return hil.sim is None or hil.sim.flash_file.read_bytes().startswith(data)


def install(hil: HilRig, tmp_path: Path, version: str) -> subprocess.CompletedProcess:
    offer(hil, tmp_path, f"demo-{version}.bin", hil.image(version))
    done = hil.update()
    assert done.returncode == 0, done.stderr
    return done


def assert_card_handed_back(hil: HilRig, mode: str) -> None:
    status = hil.card_status()
    assert status["hub_mode"] == mode and status["repaired_mode"] is None, status


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "notedfu.toml"
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------ the scenarios
def test_full_update(hil, tmp_path):
    mode = hil.card_status()["hub_mode"]
    new = hil.image("1.1.0")
    done = install(hil, tmp_path, "1.1.0")
    job = hil.job()
    assert job["state"] == "success" and job["version"] == "1.1.0"
    assert job["stages"]["confirm"]["state"] == ("done" if hil.d.console else "skipped")
    if hil.d.console:
        said = [e["text"] for e in events(done.stdout) if e["type"] == "message"]
        assert any(text.startswith("the new firmware runs: 'notedfu-demo 1.1.0 booted") for text in said), said
    assert_card_handed_back(hil, mode)
    assert hil.card_status()["dfu"]["mode"] == "completed"
    assert flash_holds(hil, new)
    if hil.sim:
        assert hil.sim.card.reports == [{"stop": True, "status": "firmware 1.1.0 installed"}, {"version": "1.1.0"}]
        assert hil.sim.chip.running_app  # started by NRST, BOOT0 low


def test_interrupted_transfer_resumes_where_it_stopped(hil, tmp_path):
    mode = hil.card_status()["hub_mode"]
    big = padded(hil.image("1.1.0"), 48 * 1024)  # fits a 64 KiB blue pill too
    offer(hil, tmp_path, "big-1.1.0.bin", big)
    argv = [sys.executable, "-m", "notedfu", *hil.update_args()]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    for line in proc.stdout:
        event = json.loads(line)
        if event["type"] == "step" and event["step"] == "transfer" and (event["percent"] or 0) >= 30:
            os.kill(proc.pid, signal.SIGKILL)  # the host loses power mid-transfer
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = hil.update()
    assert done.returncode == 0, done.stderr
    transfer = [e for e in events(done.stdout) if e["type"] == "step" and e["step"] == "transfer"]
    assert transfer[0]["bytes"] >= 0.3 * len(big)  # resumed, not started over
    assert hil.job()["state"] == "success" and flash_holds(hil, big)
    assert_card_handed_back(hil, mode)


def test_chunks_that_never_match_their_md5_are_a_transient_failure(hil, simulated_only, tmp_path):
    mode = hil.card_status()["hub_mode"]
    offer(hil, tmp_path, "demo-1.1.0.bin", hil.image("1.1.0"))
    hil.sim.card.config.faults = parse_faults(["md5+"])  # every chunk's md5 is wrong: the link, or a bad read
    done = hil.update()
    assert done.returncode == ExitCode.TRY_LATER and "E_CHUNK_MD5" in done.stderr, done.stderr
    job = hil.job()
    assert job["state"] == "processing" and job["error"] == {**job["error"], "stage": "transfer", "kind": "transient"}
    assert job["stages"]["flash"]["state"] == "pending" and flash_holds(hil, hil.image("1.0.0"))
    assert hil.sim.card.reports == [] and hil.card_status()["dfu"]["mode"] == "ready"  # nothing deleted
    assert_card_handed_back(hil, mode)


def test_an_image_the_card_holds_wrong_is_re_read_once_then_refused_and_reported(hil, simulated_only, tmp_path):
    mode = hil.card_status()["hub_mode"]
    offer(hil, tmp_path, "demo-1.1.0.bin", hil.image("1.1.0"))
    hil.sim.card.meta["md5"] = "0" * 32  # the card's copy does not match what Notehub said it is
    done = hil.update()
    assert done.returncode == ExitCode.INTEGRITY and "E_IMAGE_MD5" in done.stderr, done.stderr
    job = hil.job()
    assert job["state"] == "fail" and job["error"]["stage"] == "verify" and job["error"]["kind"] == "permanent"
    length = len(hil.image("1.1.0"))
    assert sum(1 for count in hil.sim.card.served if count == 2) == length  # read exactly twice, whole
    assert flash_holds(hil, hil.image("1.0.0"))
    assert [r for r in hil.sim.card.reports if r.get("stop")] == [{"stop": True, "err": job["error"]["code"] + ": "
                                                                   + job["error"]["message"][:200 - 14]}]
    assert_card_handed_back(hil, mode)


def test_image_with_a_wrong_signature_is_refused(hil, tmp_path):
    keys = []
    for name in ("ours", "theirs"):
        made = hil.notedfu("keygen", str(tmp_path / f"{name}.pem"))
        assert made.returncode == 0, made.stderr
        keys.append(made.stdout.split('public_key = "')[1].split('"')[0])
    image = write(tmp_path, "demo-1.1.0.bin", hil.image("1.1.0"))
    assert hil.notedfu("sign", str(image), "--key", str(tmp_path / "theirs.pem")).returncode == 0
    done = hil.sideload(image)
    assert done.returncode == 0, done.stderr
    config = config_file(tmp_path, f'[policy]\npublic_key = "{keys[0]}"\n')
    refused = hil.update("--config", config)
    assert refused.returncode == ExitCode.SIGNATURE and "E_SIGNATURE" in refused.stderr, refused.stderr
    job = hil.job()
    assert job["error"]["stage"] == "verify" and job["stages"]["flash"]["state"] == "skipped"
    assert flash_holds(hil, hil.image("1.0.0"))


def test_image_larger_than_the_target_flash_is_refused_before_erasing(hil, tmp_path):
    mode = hil.card_status()["hub_mode"]
    too_large = padded(hil.image("1.1.0"), hil.flash_size() + 1024)
    offer(hil, tmp_path, "too-large.bin", too_large)
    erased = hil.sim.chip.stats["erased_pages"] if hil.sim else None
    done = hil.update()
    assert done.returncode == ExitCode.TARGET and "E_IMAGE_TOO_LARGE" in done.stderr, done.stderr
    assert hil.job()["error"]["stage"] == "flash"
    assert flash_holds(hil, hil.image("1.0.0"))
    if hil.sim:
        assert hil.sim.chip.stats["erased_pages"] == erased  # refused before a single page was erased
    assert_card_handed_back(hil, mode)


def test_downgrade_is_refused(hil, tmp_path):
    install(hil, tmp_path, "1.1.0")
    offer(hil, tmp_path, "demo-1.0.0.bin", hil.image("1.0.0"))
    done = hil.update()
    assert done.returncode == ExitCode.FAILURE and "E_DOWNGRADE" in done.stderr, done.stderr
    assert hil.job()["error"]["stage"] == "check"
    assert flash_holds(hil, hil.image("1.1.0"))


def test_target_not_answering_fails_cleanly_and_keeps_the_image(hil, tmp_path):
    mode = hil.card_status()["hub_mode"]
    image = offer(hil, tmp_path, "demo-1.1.0.bin", hil.image("1.1.0"))
    # No BOOT0/NRST: the board keeps running 1.0.0, and its bootloader never answers.
    done = hil.update(wired=False)
    assert done.returncode == ExitCode.TRY_LATER and "E_TARGET_NO_SYNC" in done.stderr, done.stderr
    job = hil.job()
    assert job["state"] == "processing" and job["error"]["stage"] == "flash" and job["error"]["kind"] == "transient"
    assert (hil.state_dir / "staging" / f"{job['md5']}.bin").read_bytes() == image.read_bytes()
    assert flash_holds(hil, hil.image("1.0.0"))
    assert hil.card_status()["dfu"]["mode"] == "ready"  # the card's image is kept for the next attempt
    assert_card_handed_back(hil, mode)
    again = hil.update()  # wired again: the next attempt flashes the staged image
    assert again.returncode == 0, again.stderr
    assert hil.job()["state"] == "success" and flash_holds(hil, image.read_bytes())


def test_a_firmware_that_does_not_confirm_is_rolled_back(hil, needs_console, tmp_path):
    mode = hil.card_status()["hub_mode"]
    offer(hil, tmp_path, "demo-1.2.0-broken.bin", hil.image("1.2.0-broken"))  # boots, never says so
    done = hil.update()
    assert done.returncode == ExitCode.UNCONFIRMED and "rolled back to 1.0.0" in done.stderr, done.stderr
    job = hil.job()
    assert job["state"] == "fail" and job["error"]["stage"] == "confirm" and job["rolled_back"]["confirmed"]
    assert flash_holds(hil, hil.image("1.0.0"))
    if hil.sim:
        assert [r["err"] for r in hil.sim.card.reports if r.get("stop")] == \
            ["E_UNCONFIRMED: 1.2.0 did not confirm; rolled back to 1.0.0"]
    assert_card_handed_back(hil, mode)


def test_going_back_to_the_previous_image_by_reinstalling_it(hil, tmp_path):
    install(hil, tmp_path, "1.1.0")
    offer(hil, tmp_path, "demo-1.0.0.bin", hil.image("1.0.0"))
    done = hil.update("--config", config_file(tmp_path, "[policy]\nallow_downgrade = true\n"))
    assert done.returncode == 0, done.stderr
    job = hil.job()
    assert job["state"] == "success" and job["version"] == "1.0.0"
    if hil.d.console:
        said = [e["text"] for e in events(done.stdout) if e["type"] == "message"]
        assert any("notedfu-demo 1.0.0 booted" in text for text in said), said
    assert flash_holds(hil, hil.image("1.0.0"))
