"""The simulated Notecard at the byte level: what a real card's wire would carry."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import zlib

import notecard
import pytest
import serial
from smbus2 import i2c_msg

from notedfu.sim.clock import ManualClock
from notedfu.checksums import crc32
from notedfu.notecard.i2c_link import Smbus2Adapter
from notedfu.sim.i2c import SimI2CBus
from notedfu.protocol.notecard import add_crc, check_crc
from notedfu.sim.card_config import SimConfig
from notedfu.sim.notecard import NotecardSim
from notedfu.sim.timing import PacedQueue, profile


def transact(port: serial.SerialBase, req: dict, seq: int = 1) -> dict:
    """Send one request with a correct crc; return the parsed answer (crc verified)."""
    port.write(add_crc(json.dumps(req, separators=(",", ":")), seq).encode() + b"\n")
    line = port.readline()
    assert line.endswith(b"\r\n"), line
    body, got_seq, ok = check_crc(line.rstrip(b"\r\n"))
    assert ok and got_seq == seq, line
    return json.loads(body)


@pytest.fixture
def port(sim):
    card, spec = sim()
    with serial.serial_for_url(spec, timeout=2) as p:
        yield card, p


def test_crc_field_matches_note_c_test_vectors():
    # note-c test/src/_crcAdd_test.cpp, "Empty object" and "Valid JSON", expected strings verbatim:
    # the empty object gets a space where the comma goes, so that _crcError finds the field 22
    # characters from the end in every answer.
    assert add_crc("{}", 1) == '{ "crc":"0001:A3A6BF43"}'
    assert add_crc('{"req": "hub.sync"}', 1) == '{"req": "hub.sync","crc":"0001:DF2B9115"}'
    assert crc32(b'{"req": "hub.sync"}') == zlib.crc32(b'{"req": "hub.sync"}') == 0xDF2B9115


def test_bare_newline_is_answered_with_crlf(port):
    _, p = port
    p.write(b"\n")
    assert p.read(2) == b"\r\n"


def test_bad_request_crc_is_an_io_error_and_good_crc_is_echoed(port):
    _, p = port
    good = add_crc('{"req":"hub.get"}', 7)
    p.write(good.replace("hub.get", "hub.GET").encode() + b"\n")  # same crc, other bytes
    answer = json.loads(p.readline())
    assert "{io}" in answer["err"]
    rsp = transact(p, {"req": "hub.get"}, seq=8)
    assert rsp["mode"] == "periodic"


def test_request_without_crc_is_accepted_and_answered_without_one(port):
    _, p = port
    p.write(b'{"req":"hub.get"}\n')
    assert json.loads(p.readline()) == {"mode": "periodic", "device": "dev:000000000000000",
                                        "product": "com.example:notedfu", "sn": "notedfu-sim"}


def test_garbage_and_unknown_requests_get_errors(port):
    _, p = port
    p.write(b"this is not json\n")
    assert "{io}" in json.loads(p.readline())["err"]
    rsp = transact(p, {"req": "no.such"})
    assert "{not-supported}" in rsp["err"]


def test_unpaced_long_request_overflows_the_input_buffer(sim):
    clock = ManualClock()  # the wire's time: the pauses are exact, however busy the machine is
    card, spec = sim(wire_clock=clock)
    with serial.serial_for_url(spec, timeout=0.5) as p:
        long_request = json.dumps({"req": "hub.set", "product": "x" * 2000}) + "\n"
        p.write(long_request.encode())
        clock.advance(1.0)
        assert json.loads(p.readline())["err"] == "serial input overrun {io}"
        # The same bytes in 250-byte segments with note-c's 250 ms pause between them get through.
        data = long_request.encode()
        for start in range(0, len(data), 250):
            p.write(data[start:start + 250])
            clock.advance(0.25)
        clock.advance(1.0)
        assert json.loads(p.readline()) == {}


def test_dfu_status_modes_downloading_ready_stop(sim, image):
    clock = ManualClock()
    card, spec = sim(download="0.3", clock=clock)
    with serial.serial_for_url(spec, timeout=2) as p:
        rsp = transact(p, {"req": "dfu.status", "name": "user"})
        assert rsp["mode"] == "downloading" and rsp["status"].startswith("downloaded ")
        assert rsp["status"].endswith(f"/{len(image)})")
        clock.advance(0.35)
        rsp = transact(p, {"req": "dfu.status"})
        assert rsp["mode"] == "ready"
        body = rsp["body"]
        assert body["length"] == len(image) and body["md5"] == hashlib.md5(image).hexdigest()
        assert body["crc32"] == zlib.crc32(image)
        assert set(body) >= {"name", "source", "info", "notes", "created", "modified", "type"}
        rsp = transact(p, {"req": "dfu.status", "stop": True, "status": "all good", "version": "1.2.3"})
        assert rsp["mode"] == "completed" and rsp["status"] == "all good"
        assert card.reports == [{"version": "1.2.3"}, {"stop": True, "status": "all good"}]
        assert transact(p, {"req": "dfu.status", "off": True})["on"] is False
        assert transact(p, {"req": "dfu.status", "vvalue": "usb:1;high:0"})["vvalue"] == "usb:1;high:0"


def test_dfu_status_stop_with_err_is_the_error_mode(port):
    card, p = port
    rsp = transact(p, {"req": "dfu.status", "stop": True, "err": "flash failed"})
    assert rsp["mode"] == "error" and rsp["status"] == "flash failed"
    assert card.image is None


def test_hub_modes_and_dfu_completed_returns_to_the_previous_mode(port):
    card, p = port
    assert transact(p, {"req": "hub.set", "mode": "continuous"}) == {}
    assert transact(p, {"req": "hub.set", "mode": "dfu"}) == {}
    assert transact(p, {"req": "hub.get"})["mode"] == "dfu"
    transact(p, {"req": "hub.set", "mode": "dfu-completed"})
    assert transact(p, {"req": "hub.get"})["mode"] == "continuous"
    transact(p, {"req": "hub.set", "mode": "-"})
    assert transact(p, {"req": "hub.get"})["mode"] == "periodic"
    assert "err" in transact(p, {"req": "hub.set", "mode": "sideways"})


def test_dfu_get_outside_dfu_mode_and_while_not_ready(sim):
    clock = ManualClock()
    card, spec = sim(ready_delay="0.3", clock=clock)
    with serial.serial_for_url(spec, timeout=2) as p:
        assert "{hub-mode}" in transact(p, {"req": "dfu.get", "length": 0})["err"]
        transact(p, {"req": "hub.set", "mode": "dfu"})
        assert "{dfu-not-ready}" in transact(p, {"req": "dfu.get", "length": 0})["err"]
        clock.advance(0.3)
        assert transact(p, {"req": "dfu.get", "length": 0}) == {"payload": ""}


def test_dfu_get_chunks_ranges_and_size_limit(sim, image):
    card, spec = sim(max_chunk="4096")
    with serial.serial_for_url(spec, timeout=2) as p:
        transact(p, {"req": "hub.set", "mode": "dfu"})
        rsp = transact(p, {"req": "dfu.get", "offset": 4096, "length": 4096})
        chunk = base64.b64decode(rsp["payload"])
        assert chunk == image[4096:8192] and rsp["status"] == hashlib.md5(chunk).hexdigest()
        assert "{dfu-dl-chunk-length}" in transact(p, {"req": "dfu.get", "offset": 0, "length": 8192})["err"]
        assert "{dfu-total-length}" in transact(p, {"req": "dfu.get", "offset": len(image) - 10,
                                                    "length": 100})["err"]
        assert "{dfu-total-length}" in transact(p, {"req": "dfu.get", "offset": -1, "length": 10})["err"]


def test_dfu_mode_times_out_unless_renewed(sim):
    clock = ManualClock()
    card, spec = sim(dfu_timeout="0.3", mode="minimum", clock=clock)
    with serial.serial_for_url(spec, timeout=2) as p:
        transact(p, {"req": "hub.set", "mode": "dfu"})
        clock.advance(0.2)
        transact(p, {"req": "hub.set", "mode": "dfu"})  # renews the timer
        clock.advance(0.2)
        assert transact(p, {"req": "dfu.get", "length": 0}) == {"payload": ""}
        clock.advance(0.35)
        assert "{hub-mode}" in transact(p, {"req": "dfu.get", "length": 0})["err"]
        assert transact(p, {"req": "hub.get"})["mode"] == "minimum"


def test_binary_dfu_get_and_card_binary_get(port, image):
    card, p = port
    transact(p, {"req": "hub.set", "mode": "dfu"})
    rsp = transact(p, {"req": "dfu.get", "offset": 100, "length": 3000, "binary": True})
    assert rsp["length"] == 3000 and rsp["status"] == hashlib.md5(image[100:3100]).hexdigest()
    assert transact(p, {"req": "card.binary"})["length"] == 3000
    got = transact(p, {"req": "card.binary.get", "offset": 0, "length": 3000})
    encoded = p.readline()
    from notecard.cobs import cobs_decode  # note-python's own codec: the wire format is theirs
    assert bytes(cobs_decode(encoded[:-1], ord("\n"))) == image[100:3100]
    assert got["cobs"] == len(encoded) - 1


def test_old_firmware_has_no_binary_mode(sim, image):
    card, spec = sim(binary="0")
    with serial.serial_for_url(spec, timeout=2) as p:
        assert "{not-supported}" in transact(p, {"req": "card.binary"})["err"]
        transact(p, {"req": "hub.set", "mode": "dfu"})
        rsp = transact(p, {"req": "dfu.get", "offset": 0, "length": 512, "binary": True})
        assert base64.b64decode(rsp["payload"]) == image[:512]


def test_card_dfu_and_card_version(port):
    _, p = port
    assert transact(p, {"req": "card.dfu", "name": "stm32", "on": True}) == {"name": "stm32", "on": True}
    assert transact(p, {"req": "card.version"})["body"]["ver_major"] >= 5


def test_stock_note_python_serial_talks_to_the_simulator(sim, image):
    card, spec = sim()
    nc = notecard.OpenSerial(serial.serial_for_url(spec, timeout=2))
    assert nc.Transaction({"req": "hub.set", "mode": "dfu"}) == {"crc": "0000:A3A6BF43"}
    rsp = nc.Transaction({"req": "dfu.get", "offset": 0, "length": 1000})
    assert base64.b64decode(rsp["payload"]) == image[:1000]
    assert card.requests["hub.set"] == 1 and card.requests["dfu.get"] == 1


def test_i2c_bus_protocol_bytes(sim):
    clock = ManualClock()
    card, _ = sim(i2c=True, wire_clock=clock)
    bus = SimI2CBus(card)
    request = b'{"req":"hub.get"}\n'
    bus.i2c_rdwr(i2c_msg.write(0x17, bytes([len(request)]) + request))
    clock.advance(0.05)  # the card thinks
    query = i2c_msg.read(0x17, 2)
    bus.i2c_rdwr(i2c_msg.write(0x17, [0, 0]), query)
    available = bytes(query)[0]
    assert bytes(query)[1] == 0 and available > 0
    read = i2c_msg.read(0x17, 2 + min(available, 253))
    bus.i2c_rdwr(i2c_msg.write(0x17, [0, min(available, 253)]), read)
    reply = bytes(read)
    assert reply[1] == min(available, 253)
    assert reply[2:].startswith(b'{"mode":"periodic"')
    with pytest.raises(OSError) as info:
        bus.i2c_rdwr(i2c_msg.write(0x42, [0, 0]))
    assert info.value.errno == errno.EREMOTEIO


def test_stock_note_python_i2c_talks_to_the_simulated_bus_through_smbus2_messages(sim, image):
    card, _ = sim(i2c=True)
    nc = notecard.OpenI2C(Smbus2Adapter(SimI2CBus(card)), 0, 0)
    nc.Transaction({"req": "hub.set", "mode": "dfu"})
    rsp = nc.Transaction({"req": "dfu.get", "offset": 0, "length": 600})
    assert base64.b64decode(rsp["payload"]) == image[:600]


def test_paced_queue_releases_bytes_at_wire_speed():
    link = profile("uart9600")
    queue = PacedQueue(link.byte_seconds)
    queue.push(b"abcdefghij", not_before=10.0)
    assert queue.available(10.0) == 0
    assert queue.available(10.0 + 5 * link.byte_seconds) == 5
    assert queue.read(3, 10.0 + 5 * link.byte_seconds) == b"abc"
    assert queue.time_until(7, 10.0) == pytest.approx(10 * link.byte_seconds)
    queue.push(b"xy", not_before=0.0)  # one wire: queued behind the first segment
    assert queue.read(100, 20.0) == b"defghijxy"


def test_engine_answers_without_any_io():
    card = NotecardSim(SimConfig(image=b"\x01" * 100))
    reply = card.handle(b'{"req":"hub.set","mode":"dfu"}', now=0.0)
    assert reply.data == b"{}\r\n" and reply.card_seconds == pytest.approx(0.05)


@pytest.mark.parametrize("link", ["serial", "i2c"])
def test_blues_python_dfu_sample_flow_runs_on_stock_note_python(sim, image, tmp_path, link):
    from notedfu.bench import _peer_transfer  # Blues' python-dfu sequence: dfu.status, hub.set, 4 KiB base64

    card, spec = sim(i2c=link == "i2c", mode="continuous")
    if link == "i2c":
        nc = notecard.OpenI2C(Smbus2Adapter(SimI2CBus(card)), 0, 0)
    else:
        nc = notecard.OpenSerial(serial.serial_for_url(spec, timeout=2), lock_path=str(tmp_path / "lock"))
    _peer_transfer(nc, len(image), tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == image and card.hub_mode == "continuous"
    assert card.warnings == {}


def test_stock_note_python_binary_receive_over_serial(sim, image, tmp_path):
    from notecard.binary_helpers import binary_store_receive

    card, spec = sim()
    nc = notecard.OpenSerial(serial.serial_for_url(spec, timeout=2), lock_path=str(tmp_path / "lock"))
    nc.Transaction({"req": "hub.set", "mode": "dfu"})
    status = nc.Transaction({"req": "dfu.get", "offset": 8192, "length": 8192, "binary": True})
    assert status["length"] == 8192
    assert binary_store_receive(nc, 0, 8192) == image[8192:16384]
