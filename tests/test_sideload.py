"""Side-loading (`dfu.put`): the simulator's wire protocol, the side-loader over serial and I2C,
and `notedfu sideload` into a simulated card that `notedfu update` then installs from."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
import serial

from conftest import fetch, run_cli
from notedfu.bench import make_image
from notedfu.checksums import crc32
from notedfu.protocol.cobs import cobs_encode
from notedfu.errors import CardError, ExitCode
from notedfu.notecard.link import open_notecard
from notedfu.notecard.sideload import SideloadOptions, Sideloader
from notedfu.notecard.staging import Staging
from notedfu.update.job import JobStore
from rig import events, padded
from test_sim_notecard import transact


def body_for(data: bytes, name: str = "fw.bin") -> dict:
    return {"length": len(data), "md5": hashlib.md5(data).hexdigest(), "crc32": crc32(data), "source": name,
            "name": name, "type": "firmware", "created": 1}


def sideload(spec: str, state, data: bytes, **options) -> object:
    client = open_notecard(spec, timeout=3)
    try:
        return Sideloader(client, Staging(state), options=SideloadOptions(ready_poll=0.02, **options)).sideload(
            data, "fw.bin")
    finally:
        client.close()


# ------------------------------------------------------------------ the simulator's wire
@pytest.fixture
def dfu_port(sim):
    card, spec = sim(mode="continuous")
    card.image, card.dfu_state = None, "idle"
    with serial.serial_for_url(spec, timeout=2) as p:
        assert transact(p, {"req": "hub.set", "mode": "dfu"}) == {}
        yield card, p


def test_dfu_put_needs_dfu_mode_and_a_valid_body(sim):
    card, spec = sim()
    with serial.serial_for_url(spec, timeout=2) as p:
        assert "{hub-mode}" in transact(p, {"req": "dfu.put", "body": body_for(b"x")})["err"]
        transact(p, {"req": "hub.set", "mode": "dfu"})
        for bad in ({"length": 0, "md5": "0" * 32, "crc32": 1}, {"length": 5, "md5": "nothex", "crc32": 1},
                    {"length": 5, "md5": "0" * 32, "crc32": -1}, "not an object"):
            assert "{bad-body}" in transact(p, {"req": "dfu.put", "body": bad})["err"], bad
        assert "{dfu-not-started}" in transact(p, {"req": "dfu.put", "offset": 0, "length": 1,
                                                   "payload": "AA==", "status": "x"})["err"]


def test_base64_chunks_must_match_their_md5_and_continue_the_image(dfu_port):
    card, p = dfu_port
    data = make_image(1500, seed=3)  # small chunks: these raw writes are not paced like note-python's
    assert transact(p, {"req": "dfu.put", "body": body_for(data)}) == {"length": 4096}

    def put(offset: int, chunk: bytes, status: str | None = None) -> dict:
        return transact(p, {"req": "dfu.put", "offset": offset, "length": len(chunk),
                            "payload": base64.b64encode(chunk).decode(),
                            "status": status or hashlib.md5(chunk).hexdigest()})

    assert "md5" in put(0, data[:800], status="0" * 32)["err"]
    assert put(0, data[:800]) == {}
    assert "{dfu-offset}" in put(900, data[900:])["err"]  # a gap
    assert put(0, data[:800]) == {}  # a chunk sent again is taken again
    assert transact(p, {"req": "dfu.status"})["mode"] == "downloading"
    assert put(800, data[800:]) == {"pending": True}
    status = transact(p, {"req": "dfu.status"})
    assert status["mode"] == "ready" and status["body"]["md5"] == hashlib.md5(data).hexdigest()
    assert card.image == data


def test_card_binary_put_takes_raw_cobs_bytes_and_rejects_bad_ones(dfu_port):
    card, p = dfu_port
    data = bytes(range(256)) * 40  # every byte value, newlines included
    encoded = cobs_encode(data)
    assert transact(p, {"req": "card.binary.put", "cobs": len(encoded), "status": hashlib.md5(data).hexdigest()}) \
        == {}
    p.write(encoded + b"\n")  # unpaced, far beyond the 1500-byte line buffer
    held = transact(p, {"req": "card.binary"})
    assert held["length"] == len(data) and held["status"] == hashlib.md5(data).hexdigest()
    transact(p, {"req": "card.binary.put", "cobs": len(encoded), "status": "0" * 32})
    p.write(encoded + b"\n")
    assert "{bad-bin}" in transact(p, {"req": "card.binary"})["err"]  # the md5 did not match
    transact(p, {"req": "card.binary.put", "cobs": len(encoded)})
    p.write(b"\x0a" + encoded[1:] + b"\n")  # a zero byte inside COBS data
    assert "{bad-bin}" in transact(p, {"req": "card.binary"})["err"]
    assert "length" not in transact(p, {"req": "card.binary", "delete": True})


# ------------------------------------------------------------------ the side-loader
@pytest.mark.parametrize("how", ["binary", "base64", "i2c"])
def test_sideloaded_image_is_offered_exactly_and_the_card_handed_back(sim, tmp_path, how):
    card, spec = sim(i2c=how == "i2c", mode="continuous")
    card.image, card.dfu_state = None, "idle"
    data = make_image(300_000 if how == "binary" else 9_000, seed=11)
    result = sideload(spec, tmp_path / "state", data, binary=False if how == "base64" else None)
    assert result.binary == (how != "base64") and result.card_mode == "continuous"
    assert result.chunks == (3 if how == "binary" else 1 if how == "i2c" else 3)
    assert card.hub_mode == "continuous" and card.dfu_state == "ready"
    assert not (tmp_path / "state" / "card-mode.json").exists()
    fetched = fetch(spec, tmp_path / "fetch-state")
    assert fetched.path.read_bytes() == data


@pytest.mark.parametrize("at", [5, 16], ids=["before-a-chunk", "while-the-last-chunk-is-written"])
def test_a_sideload_that_loses_dfu_mode_enters_it_again_and_completes(sim, tmp_path, at):
    """The download's rule, now the side-load's too (one chunk loop): DFU mode lost mid-transfer is entered
    again, where the side-load used to give up; a chunk the card already took is not sent again. The 16th
    dfu.put is the poll while the card writes the last of 13 chunks away (probe, body, 13 chunks, poll)."""
    card, spec = sim(mode="continuous", fault=f"dfuexit:dfu.put@{at}")
    card.image, card.dfu_state = None, "idle"
    data = make_image(200_000, seed=5)
    result = sideload(spec, tmp_path / "state", data, chunk=16384)
    assert card.requests["hub.set"] == 3  # entered, entered again, handed back
    assert result.chunks == 13 and card.hub_mode == "continuous" and card.dfu_state == "ready"
    assert fetch(spec, tmp_path / "fetch-state").path.read_bytes() == data


def test_a_card_without_time_gets_the_host_clock_unless_refused(sim, tmp_path):
    card, spec = sim(time="0")
    data = padded("1.1.0")
    with pytest.raises(CardError) as info:
        sideload(spec, tmp_path / "state", data, set_time=False)
    assert info.value.code == "E_CARD_NO_TIME" and card.hub_mode == "periodic"
    result = sideload(spec, tmp_path / "state", data)
    assert result.clock_set and result.version == "1.1.0" and card.time_set


def test_old_firmware_asking_for_snappy_is_refused_and_handed_back(sim, tmp_path):
    card, spec = sim(binary="0", snappy="1")
    with pytest.raises(CardError) as info:
        sideload(spec, tmp_path / "state", padded("1.1.0"))
    assert info.value.code == "E_NOT_SUPPORTED" and "snappy" in info.value.message
    assert card.hub_mode == "periodic" and not (tmp_path / "state" / "card-mode.json").exists()


# ------------------------------------------------------------------ the command
def test_sideload_command_then_update_installs_the_sideloaded_image(rig, tmp_path):
    r = rig()
    r.card.image, r.card.meta, r.card.dfu_state = None, {}, "idle"  # Notehub has delivered nothing
    image = tmp_path / "demo-1.1.0.bin"
    image.write_bytes(padded("1.1.0", 20_000))
    done = run_cli("sideload", str(image), "--notecard", r.servers[0].path, "--state-dir", str(tmp_path / "rig"),
                   "--json")
    assert done.returncode == 0, done.stderr
    summary = events(done.stdout)[-1]["result"]
    assert summary["version"] == "1.1.0" and summary["binary"] and summary["card_mode"] == "continuous"
    assert r.card.dfu_state == "ready" and r.card.meta["source"] == "demo-1.1.0.bin"
    updated = r.update()
    assert updated.returncode == 0, updated.stderr
    assert r.flash_file.read_bytes().startswith(image.read_bytes())
    assert JobStore(r.state).latest().version == "1.1.0" and r.card.host_version == "1.1.0"


def test_sideload_killed_midway_leaves_the_card_repaired_by_the_next_one(rig, tmp_path):
    r = rig(latency="0.1")  # a slow card: the kill lands mid-transfer
    image = tmp_path / "big.bin"
    image.write_bytes(padded("1.1.0", 60_000))
    state = str(tmp_path / "rig")
    argv = [sys.executable, "-m", "notedfu", "sideload", str(image), "--notecard", r.servers[0].path,
            "--state-dir", state, "--chunk", "4096", "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        event = json.loads(line)
        if event["type"] == "step" and event["step"] == "transfer" and (event["percent"] or 0) > 10:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert r.card.hub_mode == "dfu" and r.card.dfu_state == "downloading"  # died with the card in DFU mode
    again = run_cli("sideload", str(image), "--notecard", r.servers[0].path, "--state-dir", state, "--json")
    assert again.returncode == 0, again.stderr
    assert r.card.hub_mode == "continuous" and r.card.image == image.read_bytes()
    assert events(again.stdout)[-1]["result"]["binary"]  # whatever the kill left in the binary store


@pytest.mark.parametrize("direction", ["sideload", "fetch"])
def test_a_binary_store_left_damaged_is_emptied_and_binary_mode_kept(sim, tmp_path, direction):
    card, spec = sim(mode="continuous")
    card.binary_error = "binary data does not match its md5"  # a transfer cut off mid-chunk, as after a kill
    if direction == "sideload":
        card.image, card.dfu_state = None, "idle"
        assert sideload(spec, tmp_path / "state", padded("1.1.0", 9_000)).binary
    else:
        assert fetch(spec, tmp_path / "state").binary


def test_sideload_of_a_missing_or_empty_file_is_a_usage_error(tmp_path):
    (tmp_path / "empty.bin").write_bytes(b"")
    for path in (tmp_path / "missing.bin", tmp_path / "empty.bin"):
        done = run_cli("sideload", str(path), "--notecard", "sim://notecard")
        assert done.returncode == ExitCode.USAGE and "E_IMAGE_FILE" in done.stderr, done.stderr
