"""Update files (.ndfu): packed by `notedfu pack`, downloaded from the simulated Notecard like any image,
rebuilt by the agent, checked against their header, and flashed page by page — over the real byte path."""

from __future__ import annotations

import subprocess
import sys

import pytest

from notedfu.errors import ExitCode
from notedfu.protocol.ndfu import pack
from notedfu.sim.qemu import boot
from notedfu.sim.rig import FIRMWARE_DIR, demo_image
from notedfu.update.job import JobStore
from rig import events, needs_qemu

OLD = (FIRMWARE_DIR / "sensor-2.0.0.bin").read_bytes()
NEW = (FIRMWARE_DIR / "sensor-2.0.1.bin").read_bytes()
PAGES = -(-len(NEW) // 1024)  # the F100's 1 KiB pages the image covers
SENSOR_BANNER = ("--pattern", "notedfu-sensor {version} booted")


def sensor_rig(rig, offered: bytes, installed: bytes = OLD, **opts):
    return rig(offered=offered, installed=installed, offered_name="sensor-2.0.1.ndfu", **opts)


def flashed_image(r) -> bytes:
    return r.flash_file.read_bytes()[:len(NEW)]


def messages(stdout: str) -> list[str]:
    return [e["text"] for e in events(stdout) if e["type"] == "message"]


def flash_step(stdout: str) -> dict:
    return next(e for e in events(stdout) if e["type"] == "step" and e["step"] == "flash" and e["state"] == "done")


@needs_qemu
def test_a_delta_is_applied_to_the_chips_own_image_and_the_new_firmware_boots(rig):
    """No base kept (a fresh agent): the chip is read back through its bootloader (lines wired), the delta
    applied, only the differing pages written, and QEMU prints the new banner."""
    r = sensor_rig(rig, pack(NEW, OLD), lines=True)
    done = r.update("--console", f"qemu:{r.flash_file}", *SENSOR_BANNER)
    assert done.returncode == 0, done.stderr + done.stdout
    assert flashed_image(r) == NEW
    assert any("reading the chip" in m for m in messages(done.stdout))
    job = JobStore(r.state).latest()
    assert job.state == "success" and job.version == "2.0.1"
    assert job.built["encoding"] == "bsdiff4" and job.built["md5"] == JobStore(r.state).installed()["md5"]
    step = flash_step(done.stdout)
    # The fix moves the code after it: 8 of the 67 pages differ, and the first page is written last.
    assert step["pages_written"] + step["pages_unchanged"] == PAGES and step["pages_written"] == 9
    assert {"stop": True, "status": "firmware 2.0.1 installed"} in r.card.reports
    assert r.card.hub_mode == "continuous"
    assert boot(r.flash_file, r"notedfu-sensor 2\.0\.1 booted on qemu-vldiscovery", timeout=20).matched


def test_a_delta_uses_the_image_the_agent_kept_from_the_last_update(rig):
    """The plain 2.0.0 installed first (and kept staged); the delta to 2.0.1 then needs nothing from the chip."""
    r = sensor_rig(rig, OLD, installed=demo_image("1.0.0"), lines=True)
    first = r.update()
    assert first.returncode == 0, first.stderr
    r.card.stage(pack(NEW, OLD), "sensor-2.0.1.ndfu")
    done = r.update()
    assert done.returncode == 0, done.stderr + done.stdout
    assert flashed_image(r) == NEW
    assert any("the image the agent kept" in m for m in messages(done.stdout))
    installed = JobStore(r.state).installed()
    assert installed["md5"] == JobStore(r.state).latest().built["md5"] and installed["version"] == "2.0.1"
    assert installed["package"] == JobStore(r.state).latest().md5
    step = flash_step(done.stdout)
    assert step["pages_written"] == 9 and step["pages_unchanged"] == PAGES - 9


def test_a_compressed_image_is_inflated_checked_and_flashed(rig):
    r = sensor_rig(rig, pack(NEW), installed=demo_image("1.0.0"))
    done = r.update()
    assert done.returncode == 0, done.stderr
    assert flashed_image(r) == NEW
    assert JobStore(r.state).latest().built["encoding"] == "xz"


@pytest.mark.parametrize("lines", [True, False], ids=["chip-read", "no-lines"])
def test_a_delta_against_another_base_is_refused_before_any_page_is_touched(rig, lines):
    """The chip holds the demo, not the delta's base: E_DELTA_BASE, permanent, reported to Notehub once, the
    chip's flash byte for byte as it was, the card back in its mode."""
    r = sensor_rig(rig, pack(NEW, OLD), installed=demo_image("1.0.0"), lines=lines)
    before = r.flash_file.read_bytes()
    done = r.update()
    assert done.returncode != 0
    assert "E_DELTA_BASE" in done.stderr
    assert r.flash_file.read_bytes() == before
    job = JobStore(r.state).latest()
    assert job.state == "fail" and job.error["code"] == "E_DELTA_BASE" and job.error["stage"] == "verify"
    assert job.stages["flash"].state in ("pending", "skipped") and not job.flash_started
    assert [rep for rep in r.card.reports if rep.get("err", "").startswith("E_DELTA_BASE")] != []
    assert r.card.hub_mode == "continuous"


def test_a_corrupted_update_file_is_refused_and_nothing_is_flashed(rig):
    """Damaged before it reached Notehub (its MD5 is the damaged file's, so the download verifies): the
    rebuilt image does not match the header. Permanent, reported, nothing written."""
    damaged = bytearray(pack(NEW))
    damaged[len(damaged) // 2] ^= 0x40
    r = sensor_rig(rig, bytes(damaged), installed=demo_image("1.0.0"))
    before = r.flash_file.read_bytes()
    done = r.update()
    assert done.returncode == ExitCode.INTEGRITY, done.stderr
    assert "E_UPDATE_FILE" in done.stderr
    assert r.flash_file.read_bytes() == before
    assert any(rep.get("err", "").startswith("E_UPDATE_FILE") for rep in r.card.reports)


def test_pack_writes_signed_update_files_the_agent_verifies(rig, tmp_path):
    """`notedfu pack --key` signs header + payload; an agent with the public key installs it, and refuses the
    same update file unsigned."""
    key = tmp_path / "signing.pem"
    keygen = subprocess.run([sys.executable, "-m", "notedfu", "keygen", str(key)], capture_output=True, text=True)
    public = keygen.stdout.split('public_key = "')[1].split('"')[0]
    (tmp_path / "old.bin").write_bytes(OLD)
    (tmp_path / "new.bin").write_bytes(NEW)
    made = subprocess.run([sys.executable, "-m", "notedfu", "pack", str(tmp_path / "new.bin"), "--from",
                           str(tmp_path / "old.bin"), "--key", str(key), "-o", str(tmp_path / "u.ndfu")],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert "delta against" in made.stdout and "signed" in made.stdout
    config = tmp_path / "key.toml"
    config.write_text(f'[policy]\npublic_key = "{public}"\n')
    r = sensor_rig(rig, (tmp_path / "u.ndfu").read_bytes(), lines=True)
    done = r.update("--config", str(config))
    assert done.returncode == 0, done.stderr
    assert flashed_image(r) == NEW
    r.card.stage(pack(NEW, OLD), "unsigned.ndfu")
    refused = r.update("--config", str(config), "--force")
    assert refused.returncode == ExitCode.SIGNATURE and "E_SIGNATURE" in refused.stderr


def test_pack_refuses_what_it_cannot_pack(tmp_path):
    (tmp_path / "new.bin").write_bytes(NEW)
    (tmp_path / "u.ndfu").write_bytes(pack(NEW))
    cases = {("missing.bin",): "E_IMAGE_FILE", ("u.ndfu",): "E_UPDATE_FILE",
             ("new.bin", "--from", "missing.bin"): "E_IMAGE_FILE", ("new.bin", "--key", "nokey.pem"): "E_"}
    for args, code in cases.items():
        done = subprocess.run([sys.executable, "-m", "notedfu", "pack", *(str(tmp_path / a) if not a.startswith("-")
                                                                          else a for a in args),
                               "-o", str(tmp_path / "out.ndfu")], capture_output=True, text=True)
        assert done.returncode != 0 and code in done.stderr, (args, done.stderr)
        assert not (tmp_path / "out.ndfu").exists()
