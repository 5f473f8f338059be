"""The simulated Notecard against Blues' own C library (note-c), over serial and I2C.

Needs a checkout of blues/note-c named by ``$NOTEDFU_NOTE_C`` and a C compiler;
skips without them (see tests/notec.py). Each test runs the card through the
very code host firmware runs: ``NoteRequestResponse`` with its CRC check and
retries, ``NoteBinaryStoreReceive`` with its I2C ``available`` handling.
"""

from __future__ import annotations

import json
import shutil

import pytest

from notedfu.checksums import md5_hex
from notedfu.sim.cardport import CardPort
from notedfu.sim.i2c import SimI2CBus
from notedfu.sim.card_config import SimConfig
from notedfu.sim.notecard import NotecardSim
from notedfu.sim.timing import profile

from notec import NoteC, build, source_dir

SRC = source_dir()
pytestmark = pytest.mark.skipif(SRC is None or not (shutil.which("cc") or shutil.which("gcc")),
                                reason="note-c interop: set NOTEDFU_NOTE_C to a blues/note-c checkout and "
                                       "have a C compiler (not available offline in CI)")


@pytest.fixture(scope="module")
def note_c() -> NoteC:
    assert SRC is not None
    return NoteC(build(SRC))


def card(image: bytes, link: str) -> NotecardSim:
    fast = profile(link).with_overrides(request_latency=0.002, read_seconds_per_kib=0.0005, ready_delay=0.0)
    return NotecardSim(SimConfig(image=image, hub_mode="periodic"), fast)


@pytest.fixture(params=["serial", "i2c"])
def connected(request, note_c, image):
    sim = card(image, "usb" if request.param == "serial" else "i2c400k")
    if request.param == "serial":
        note_c.use_serial(CardPort(sim, sim.link))
    else:
        note_c.use_i2c(SimI2CBus(sim))
    return note_c, sim


def test_note_c_accepts_every_answer_shape_with_its_crc(connected):
    note_c, sim = connected
    # {} (hub.set), one field (dfu.get length 0), many fields (dfu.status): before the simulator framed
    # the crc of {} the way note-c's _crcAdd does, every hub.set came back as "CRC error {io}".
    assert json.loads(note_c.request('{"req":"hub.set","mode":"dfu"}')) == {}
    assert json.loads(note_c.request('{"req":"dfu.get","length":0}')) == {"payload": ""}
    status = json.loads(note_c.request('{"req":"dfu.status","name":"user"}'))
    assert status["mode"] == "ready" and status["body"]["md5"] == md5_hex(sim.image)
    assert json.loads(note_c.request('{"req":"hub.set","mode":"dfu-completed"}')) == {}
    assert sim.hub_mode == "periodic"


def test_note_c_gets_its_request_id_back(connected):
    note_c, _ = connected
    assert json.loads(note_c.request('{"req":"hub.get","id":7}'))["id"] == 7


def test_note_c_binary_receive_reads_a_dfu_chunk(connected, image):
    note_c, sim = connected
    note_c.request('{"req":"hub.set","mode":"dfu"}')
    answer = json.loads(note_c.request('{"req":"dfu.get","offset":4096,"length":8192,"binary":true}'))
    assert answer["length"] == 8192 and answer["status"] == md5_hex(image[4096:12288])
    # NoteBinaryStoreReceive: card.binary.get's JSON answer, then the COBS bytes — over I2C only if the
    # card reports nothing left at the end of the answer line and the binary data on the next query.
    assert note_c.binary_receive(8192) == image[4096:12288]
    note_c.request('{"req":"hub.set","mode":"dfu-completed"}')


def test_note_c_paces_i2c_within_what_the_simulator_allows(note_c, image):
    sim = card(image, "i2c400k")
    note_c.use_i2c(SimI2CBus(sim))
    for req in ('{"req":"hub.get"}', '{"req":"hub.set","mode":"dfu"}',
                '{"req":"dfu.get","offset":0,"length":4096}', '{"req":"hub.set","mode":"dfu-completed"}'):
        assert "err" not in json.loads(note_c.request(req))
    assert sim.warnings == {}  # Blues' own library never trips the simulator's pacing rules
