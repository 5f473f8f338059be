"""What the chip holds outranks the agent's record; a firmware that does not confirm is rolled back.

The rigs here have BOOT0/NRST wired (the simulated GPIO chip), so the agent can take the running board
back into its bootloader to look at it — and to put the last-known-good image back.
"""

from __future__ import annotations

from notedfu.errors import ExitCode
from notedfu.update.job import JobStore
from rig import events, needs_qemu, padded, toml

from notedfu.sim.rig import demo_image


def test_the_same_image_twice_writes_nothing_the_second_time(rig):
    r = rig(lines=True)
    assert r.update().returncode == 0
    writes = r.chip.writes
    r.card.stage(padded("1.1.0"), "demo.bin")  # Notehub sends the same image again
    again = r.update()
    assert again.returncode == ExitCode.UP_TO_DATE, again.stderr
    assert r.chip.writes == writes and r.chip.running_app  # looked (in the bootloader), wrote nothing, restarted


def test_a_board_reflashed_by_hand_is_updated_although_the_record_says_up_to_date(rig, tmp_path):
    r = rig(lines=True)
    assert r.update().returncode == 0
    r.chip.flash[:len(padded("1.0.0"))] = padded("1.0.0")  # someone put 1.0.0 back by hand (SWD, a bench)
    r.card.stage(padded("1.1.0"), "demo.bin")
    again = r.update()
    assert again.returncode == 0, again.stderr
    assert "the chip does not hold the recorded 1.1.0" in again.stdout
    assert JobStore(r.state).latest().state == "success" and bytes(r.chip.flash).startswith(padded("1.1.0"))


def test_a_downgrade_is_refused_only_if_the_chip_really_holds_the_newer_image(rig):
    r = rig(lines=True)
    assert r.update().returncode == 0  # 1.1.0 recorded and on the chip
    r.card.stage(padded("1.0.0"), "old.bin")
    refused = r.update()
    assert refused.returncode == ExitCode.FAILURE and "E_DOWNGRADE" in refused.stderr
    r.chip.flash[:len(padded("1.0.0"))] = padded("1.0.0")  # the board was swapped for one running 1.0.0
    r.card.stage(padded("1.0.0"), "old.bin")
    again = r.update()
    assert again.returncode == ExitCode.UP_TO_DATE, again.stderr  # the chip holds exactly what is offered
    assert JobStore(r.state).installed()["version"] == "1.0.0"  # the record follows the chip


@needs_qemu
def test_a_firmware_that_never_confirms_is_rolled_back_and_not_retried(rig, tmp_path):
    broken = demo_image("1.2.0-broken")
    r = rig(offered=broken, installed=demo_image("1.0.0"), lines=True)
    config = tmp_path / "confirm.toml"
    config.write_text(toml({"confirm": {"console": f"qemu:{r.flash_file}", "pattern": "notedfu-demo {version} booted",
                                        "timeout": 6}}))
    done = r.update("--config", str(config))
    assert done.returncode == ExitCode.UNCONFIRMED, done.stderr
    job = JobStore(r.state).latest()
    assert job.state == "fail" and job.rolled_back == {"md5": job.lkg["md5"], "version": "1.0.0", "confirmed": True}
    assert job.lkg["from"] == "chip"  # nothing recorded yet: the chip's own image was read back and kept
    assert r.flash_file.read_bytes().startswith(demo_image("1.0.0"))
    said = [e["text"] for e in events(done.stdout) if e["type"] == "message"]
    assert any(text.startswith("the last-known-good firmware runs again: 'notedfu-demo 1.0.0 booted") for text in said)
    stops = [rep for rep in r.card.reports if rep.get("stop")]
    assert stops == [{"stop": True, "err": "E_UNCONFIRMED: 1.2.0 did not confirm; rolled back to 1.0.0"}]
    assert JobStore(r.state).installed()["version"] == "1.0.0"
    # The next poll: the card's copy is gone (stop deleted it), so nothing is offered, nothing retried.
    idle = r.update("--config", str(config))
    assert idle.returncode == ExitCode.NOT_READY
    # Notehub sends the very same image again: refused without touching the board, Notehub told why.
    writes = r.chip.writes
    r.card.stage(broken, "demo-1.2.0-broken.bin")
    again = r.update("--config", str(config))
    assert again.returncode == ExitCode.FAILURE and "E_ROLLED_BACK" in again.stderr, again.stderr
    assert r.chip.writes == writes and r.card.reports[-1]["err"].startswith("E_ROLLED_BACK")
