"""The Notecard request layer against a card that behaves like real ones: junk and half lines, refused
chunk sizes in every form Blues users met, a second program on the port, I2C pacing and messages.

Everything goes over the real byte path (the ``sim://`` port or the simulated I2C bus); a tap on the
port records what the host wrote, the way a logic analyser would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import serial
from smbus2 import i2c_msg

from conftest import run_cli
from notedfu.sim.clock import ManualClock
from notedfu.errors import LinkError
from notedfu.notecard.client import CardClient
from notedfu.notecard.dfu import Downloader, FetchOptions
from notedfu.notecard.link import open_notecard
from notedfu.notecard.staging import Staging
from notedfu.notecard.i2c_link import Smbus2Adapter
from notedfu.notecard.transport import SerialLink
from notedfu.protocol.notecard import AnswerReader, add_crc, encode_request, is_idempotent
from notedfu.sim.i2c import SimI2CBus
from notedfu.sim.card_config import REFUSALS


class Tap:
    """A pyserial port that keeps a copy of every byte the host writes."""

    def __init__(self, port: serial.SerialBase) -> None:
        self.port = port
        self.written = bytearray()

    def write(self, data: bytes) -> int:
        self.written += data
        return self.port.write(data)

    def requests(self) -> list[dict]:
        """Every request line written, as JSON (crc field dropped)."""
        out = []
        for line in bytes(self.written).split(b"\n"):
            if line.strip():
                req = json.loads(line)
                req.pop("crc", None)
                out.append(req)
        return out

    def __getattr__(self, name: str):
        return getattr(self.port, name)

    def __setattr__(self, name: str, value) -> None:
        if name in ("port", "written"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.port, name, value)


def tapped(spec: str, timeout: float = 3.0) -> tuple[CardClient, Tap]:
    tap = Tap(serial.serial_for_url(spec))
    client = CardClient(SerialLink(tap), timeout=timeout)
    client.resync()
    return client, tap


def fetch_with(client: CardClient, state: Path, **options):
    options.setdefault("ready_poll", 0.02)
    return Downloader(client, Staging(state), options=FetchOptions(**options)).fetch()


def names(tap: Tap) -> list[str]:
    return [r["req"] for r in tap.requests()]


# ------------------------------------------------------------------ the protocol core, byte by byte
def test_requests_are_framed_as_note_c_frames_them():
    # note-c test/src/_crcAdd_test.cpp expected strings, verbatim
    assert add_crc("{}", 1) == '{ "crc":"0001:A3A6BF43"}'
    assert add_crc('{"req": "hub.sync"}', 1) == '{"req": "hub.sync","crc":"0001:DF2B9115"}'
    assert encode_request({"req": "dfu.get", "length": 0}, 0x12) == \
        b'{"req":"dfu.get","length":0,"crc":"0012:%08X"}\n' % zlib.crc32(b'{"req":"dfu.get","length":0}')


def test_answers_are_sorted_as_note_c_checks_them():
    # The cases of note-c's test/src/_crcError_test.cpp, plus what the host must do with each line.
    reader = AnswerReader()
    assert reader.sort(b"", 1).kind == "junk"
    assert reader.sort(b'{"req":"hub.sync","crc":"0009:10BAC79A"', 1).kind == "junk"  # no closing brace
    assert reader.sort(b'{"err":"cannot interpret JSON {io}"}\r\n', 1).kind == "answer"
    assert reader.sort(b'{"connected":false,"status":"connecting"}', 1).kind == "answer"  # no crc yet: fine
    assert not reader.card_sends_crc
    good = add_crc('{"mode":"periodic"}', 1).encode() + b"\r\n"
    assert reader.sort(good, 1).kind == "answer" and reader.sort(good, 1).body == {"mode": "periodic"}
    assert reader.card_sends_crc
    assert reader.sort(b'{"connected":false,"status":"connecting"}', 1).kind == "corrupt"  # crc missing now
    assert reader.sort(b'{"crc":"0009:10BAC79A","req": "hub.sync"}', 1).kind == "corrupt"  # not at the tail
    assert reader.sort(add_crc("{}", 1).encode(), 1).kind == "answer"
    assert reader.sort(add_crc("{}", 0).encode(), 1).kind == "stale"  # the answer to an earlier request
    assert reader.sort(add_crc('{"a":1}', 1).replace("1,", "2,").encode(), 1).kind == "corrupt"
    assert reader.sort(b"sync: wireless modem now ON {modem-on}\r\n", 1).kind == "junk"


def test_the_simulator_frames_the_crc_of_every_answer_shape_as_note_c_expects(sim):
    card, spec = sim()
    with serial.serial_for_url(spec, timeout=2) as port:
        port.write(encode_request({"req": "hub.set", "mode": "dfu"}, 1))
        assert port.readline() == b'{ "crc":"0001:A3A6BF43"}\r\n'  # {} → a space where the comma goes
        port.write(encode_request({"req": "dfu.get", "length": 0}, 2))
        assert port.readline() == b'{"payload":"","crc":"0002:%08X"}\r\n' % zlib.crc32(b'{"payload":""}')
        port.write(encode_request({"req": "hub.get", "id": 42}, 3))
        answer = json.loads(port.readline())
        assert answer["id"] == 42 and answer["crc"].startswith("0003:")


def test_only_requests_safe_to_repeat_are_sent_again_when_their_answer_is_lost():
    assert is_idempotent({"req": "hub.get"}) and is_idempotent({"req": "hub.set", "mode": "dfu"})
    assert is_idempotent({"req": "dfu.get", "offset": 0, "length": 4096, "binary": True})
    assert is_idempotent({"req": "dfu.status", "name": "user"}) and is_idempotent({"req": "dfu.put"})
    assert not is_idempotent({"req": "dfu.status", "name": "user", "stop": True, "err": "x"})
    assert not is_idempotent({"req": "dfu.put", "offset": 0, "length": 3, "payload": "AAAA", "status": "0" * 32})
    assert not is_idempotent({"req": "card.binary.put", "cobs": 3}) and not is_idempotent({"req": "card.time",
                                                                                           "time": 1})


# ------------------------------------------------------------------ junk and half lines
CLEAN_REQUESTS: dict[str, list[str]] = {}

JUNK_TARGETS = ["dfu.status", "hub.get", "hub.set", "card.version", "card.binary", "dfu.get", "dfu.get@2",
                "card.binary.get", "hub.set@2"]


@pytest.mark.parametrize("kind", ["trace", "garbage", "halfline"])
@pytest.mark.parametrize("target", JUNK_TARGETS)
def test_a_junk_line_before_any_answer_is_skipped_without_sending_anything_again(sim, tmp_path, kind, target):
    clean_card, clean_spec = sim(mode="continuous")
    client, tap = tapped(clean_spec)
    fetch_with(client, tmp_path / "clean")
    expected = names(tap)
    card, spec = sim(mode="continuous", fault=f"{kind}:{target}")
    client, tap = tapped(spec)
    result = fetch_with(client, tmp_path / "state")
    assert result.path.read_bytes() == card.image
    assert client.junk_lines >= 1  # the line was there, and skipped
    assert names(tap) == expected  # the same requests, none of them sent twice
    assert result.card_mode == "continuous" and card.hub_mode == "continuous"
    assert not (tmp_path / "state" / "card-mode.json").exists()  # hand-back confirmed, even after junk


def test_a_card_that_only_sends_junk_gets_one_line_in_our_words(sim, tmp_path):
    card, spec = sim(fault="drop:hub.get+")  # every answer loses bytes from its middle: never JSON
    client, _ = tapped(spec, timeout=0.5)
    with pytest.raises(LinkError) as info:
        client.request({"req": "hub.get"})
    assert info.value.code == "E_NOTECARD_IO"
    assert "hub.get: no valid answer from the Notecard" in info.value.message
    assert "Expecting value" not in info.value.message and "\n" not in info.value.message


def test_a_lost_answer_is_retried_for_an_idempotent_request_and_not_for_stop(sim, tmp_path):
    card, spec = sim(fault="restart:hub.get")  # the card restarts instead of answering the first hub.get
    client, tap = tapped(spec, timeout=0.5)
    assert client.request({"req": "hub.get"})["mode"] == "periodic"
    assert names(tap).count("hub.get") == 2
    card, spec = sim(fault="restart:dfu.status")
    client, tap = tapped(spec, timeout=0.5)
    with pytest.raises(LinkError):
        client.request({"req": "dfu.status", "name": "user", "stop": True, "status": "x"})
    assert names(tap).count("dfu.status") == 1  # stop deletes the card's image: never sent twice blindly


# ------------------------------------------------------------------ chunk sizes
@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_a_refused_chunk_size_costs_one_request_once_per_card(sim, tmp_path, refusal, image):
    card, spec = sim(max_chunk="4096", refusal=refusal, mode="continuous")
    client, tap = tapped(spec, timeout=2.0)
    started = time.monotonic()
    result = fetch_with(client, tmp_path / "state")
    assert result.path.read_bytes() == image and result.binary
    assert result.refused_sizes == [8192] and result.chunk_size == 4096
    asked = [r["length"] for r in tap.requests() if r["req"] == "dfu.get" and r.get("length")]
    assert asked.count(8192) == 1 and max(asked) == 8192  # one request spent on the refused size, no retries
    assert time.monotonic() - started < 8  # an {io} refusal used to burn 30 requests and 22 s
    remembered = json.loads(next((tmp_path / "state" / "cards").glob("*.json")).read_text())
    assert remembered["binary"] == {"good": 4096, "refused": 8192}
    card.stage(image[::-1], "next.bin")  # the next image, from the same card
    client, tap = tapped(spec)
    fetch_with(client, tmp_path / "state")
    assert all(r.get("length", 0) <= 4096 for r in tap.requests() if r["req"] == "dfu.get")  # never asked again


def test_binary_mode_grows_the_chunk_once_and_base64_stays_at_4096(sim, tmp_path, image):
    card, spec = sim(max_chunk="16384")
    client, tap = tapped(spec)
    result = fetch_with(client, tmp_path / "state")
    asked = [r["length"] for r in tap.requests() if r["req"] == "dfu.get" and r.get("length")]
    assert asked == [8192, 16384, 40000 - 24576]  # 4096 known, 8192 tried and taken, then 16384; the rest
    assert result.refused_sizes == [] and result.chunk_size == 16384
    card, spec = sim(max_chunk="16384", binary="0")
    client, tap = tapped(spec)
    result = fetch_with(client, tmp_path / "b64")
    assert {r["length"] for r in tap.requests() if r["req"] == "dfu.get" and r.get("length")} == {4096, 40000 % 4096}
    assert result.refused_sizes == [] and not result.binary


# ------------------------------------------------------------------ one program per port
def _sim_pty(tmp_path: Path, image: bytes, *extra: str) -> tuple[subprocess.Popen, str]:
    path = tmp_path / f"image-{len(list(tmp_path.glob('image-*')))}.bin"
    path.write_bytes(image)
    proc = subprocess.Popen([sys.executable, "-m", "notedfu", "sim", "notecard", "--pty", "--image", str(path),
                             "--ready-delay", "0", *extra], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def test_a_second_program_on_the_same_card_is_refused_at_once_naming_the_first(tmp_path, image):
    card, pty = _sim_pty(tmp_path, image * 4, "--profile", "uart9600")  # ~3 minutes of transfer at 9600 baud
    fetch = subprocess.Popen([sys.executable, "-m", "notedfu", "fetch", "--notecard", pty, "--state-dir",
                              str(tmp_path / "a"), "--json"], stdout=subprocess.PIPE, text=True)
    try:
        for line in fetch.stdout:
            if json.loads(line).get("step") == "transfer":
                break
        started = time.monotonic()
        second = run_cli("status", "--notecard", pty, "--state-dir", str(tmp_path / "b"))
        assert time.monotonic() - started < 5
        assert second.returncode == 3 and "E_BUSY" in second.stderr, second.stderr
        assert f"in use by pid {fetch.pid} (" in second.stderr and "fetch" in second.stderr
        # note-python's machine-wide lock is not ours: holding it stops nobody.
        from filelock import FileLock
        with FileLock(os.environ["NOTECARD_SERIAL_LOCK_PATH"]):
            assert fetch.poll() is None
        fetch.kill()
        fetch.wait()
        after = run_cli("status", "--notecard", pty, "--state-dir", str(tmp_path / "c"))  # the kernel freed it
        assert after.returncode == 0, after.stderr
    finally:
        fetch.kill()
        fetch.wait()
        _stop(card)


def test_two_cards_on_one_host_are_fetched_at_the_same_time_by_two_programs(tmp_path, image):
    cards = [_sim_pty(tmp_path, image, "--profile", "aux115200") for _ in range(2)]
    try:
        runs = [subprocess.Popen([sys.executable, "-m", "notedfu", "fetch", "--notecard", pty, "--state-dir",
                                  str(tmp_path / f"state{i}"), "--json"], stdout=subprocess.PIPE, text=True)
                for i, (_, pty) in enumerate(cards)]
        spans = []
        for run in runs:
            stamps = [json.loads(line)["time"] for line in run.stdout]
            assert run.wait(timeout=120) == 0
            spans.append((stamps[0], stamps[-1]))
        assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # the two transfers overlapped
    finally:
        for proc, _ in cards:
            _stop(proc)


# ------------------------------------------------------------------ I2C: messages and pacing
def _i2c_read(bus: SimI2CBus, count: int) -> tuple[int, bytes]:
    ask, answer = i2c_msg.write(0x17, bytes([0, count])), i2c_msg.read(0x17, count + 2)
    bus.i2c_rdwr(ask, answer)
    raw = bytes(answer)
    assert raw[1] == count
    return raw[0], raw[2:]


def test_i2c_reports_nothing_left_at_the_end_of_an_answer_line_and_the_binary_data_on_the_next_query(sim, image):
    clock = ManualClock()
    card, _ = sim(profile="i2c400k", wire_clock=clock)
    bus = SimI2CBus(card)
    for req in ({"req": "hub.set", "mode": "dfu"}, {"req": "dfu.get", "offset": 0, "length": 1000, "binary": True},
                {"req": "card.binary.get", "offset": 0, "length": 1000}):
        line = encode_request(req, 0)
        bus.i2c_rdwr(i2c_msg.write(0x17, bytes([len(line)]) + line))
        clock.advance(0.03)  # the card thinks
        available, _ = _i2c_read(bus, 0)
        answer = b""
        while available:
            available, data = _i2c_read(bus, min(available, 253))
            answer += data
        assert answer.endswith(b"\r\n") and b"\n" not in answer[:-1]  # exactly one line, then 0 available
    announced = json.loads(answer)["cobs"]
    clock.advance(0.03)
    available, _ = _i2c_read(bus, 0)
    assert available == min(announced + 1, 253)  # the binary data is the next message


def test_stock_note_python_binary_receive_works_over_the_simulated_i2c_bus(sim, image):
    import notecard
    from notecard.binary_helpers import binary_store_receive

    card, _ = sim(profile="i2c400k")
    nc = notecard.OpenI2C(Smbus2Adapter(SimI2CBus(card)), 0, 0)
    nc.Transaction({"req": "hub.set", "mode": "dfu"})
    nc.Transaction({"req": "dfu.get", "offset": 512, "length": 3000, "binary": True})
    assert binary_store_receive(nc, 0, 3000) == image[512:3512]
    assert card.warnings == {}  # note-python's pacing is within the rules


@pytest.mark.parametrize("pacing", ["blues", "docs"])
def test_our_i2c_link_paces_within_blues_rules(sim, tmp_path, image, pacing):
    card, spec = sim(i2c=True)
    client = open_notecard(f"{spec}&pacing={pacing}")
    result = fetch_with(client, tmp_path / "state")
    assert result.path.read_bytes() == image and result.binary
    assert card.warnings == {}


def test_a_host_that_polls_too_fast_is_warned_about_and_with_strict_timing_not_answered(sim):
    clock = ManualClock()
    card, _ = sim(profile="i2c400k", wire_clock=clock)
    bus = SimI2CBus(card)
    for _ in range(3):
        _i2c_read(bus, 0)  # nothing pending: three polls back to back
    assert any(re.match(r"polled \d+ ms after an empty poll \(Blues: 20 ms\)", w) for w in card.warnings)
    line = encode_request({"req": "hub.get"}, 0)
    bus.i2c_rdwr(i2c_msg.write(0x17, bytes([10]) + line[:10]))
    bus.i2c_rdwr(i2c_msg.write(0x17, bytes([len(line) - 10]) + line[10:]))  # no 20 ms between the chunks
    assert any("after the previous one (Blues: 20 ms per chunk)" in w for w in card.warnings)
    strict, _ = sim(profile="i2c400k", strict_timing="1")
    bus = SimI2CBus(strict)
    _i2c_read(bus, 0)
    with pytest.raises(OSError):
        _i2c_read(bus, 0)  # a stressed card does not acknowledge
    assert bus.nacks == 1


def test_a_uart_card_does_not_wait_for_a_host_that_stops_reading(tmp_path, image):
    card, pty = _sim_pty(tmp_path, image, "--profile", "aux115200")
    try:
        with serial.Serial(pty, timeout=2) as port:
            port.write(encode_request({"req": "hub.set", "mode": "dfu"}, 1))
            port.readline()
            port.write(encode_request({"req": "dfu.get", "offset": 0, "length": 8192}, 2))  # ~11 KB of answer
            time.sleep(2.0)  # ~23 KB could have crossed the wire meanwhile; nobody read
            got = port.read(20000)
        assert len(got) < 11000 and not got.endswith(b"}\r\n")  # the rest fell off the end of the tty buffer
    finally:
        card.send_signal(signal.SIGTERM)
        summary = json.loads(card.stdout.read().strip().splitlines()[-1])
        card.wait(timeout=10)
    assert any("bytes lost" in warning for warning in summary["warnings"])
