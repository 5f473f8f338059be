"""Properties over generated inputs (hypothesis): the protocol cores round-trip, the AN3155 client and the
emulator agree, and no parser of outside input fails other than with its documented error.

The same targets run under atheris for long fuzzing sessions: see ``tests/fuzz.py``.
"""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notedfu.errors import NotedfuError
from notedfu.protocol.an3155 import stm32_crc
from notedfu.protocol.cobs import CobsError, cobs_decode, cobs_encode
from notedfu.protocol.firmware import firmware_info
from notedfu.protocol.notecard import AnswerReader, add_crc, check_crc, encode_request
from notedfu.ports import serial_for_url
from notedfu.sim import registry
from notedfu.sim.stm32 import Stm32Sim
from notedfu.target.an3155 import Bootloader
from notedfu.target.image import load_image
from notedfu.update.control import parse_request
from notedfu.update.signature import split_signed, verified_payload

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_scalars = st.none() | st.booleans() | st.integers(-2**31, 2**31) | st.text(string.printable, max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=8), inner, max_size=4),
                           max_leaves=12)
requests = st.dictionaries(st.text(string.ascii_lowercase + "._", min_size=1, max_size=10), json_values, max_size=5) \
    .map(lambda d: {"req": "card.test", **d})


# ------------------------------------------------------------------ the Notecard codec
@FAST
@given(req=requests, seq=st.integers(0, 0xFFFF))
def test_a_request_the_host_frames_is_read_back_whole_by_the_card(req, seq):
    line = encode_request(req, seq)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    body, got_seq, crc_ok = check_crc(line.rstrip(b"\n"))
    assert crc_ok and got_seq == seq and json.loads(body) == req


@FAST
@given(answer=requests.map(lambda d: {k: v for k, v in d.items() if k not in ("req", "crc")}),  # crc: the frame's own
       seq=st.integers(0, 0xFFFF))
def test_an_answer_the_card_frames_is_sorted_as_the_answer_to_its_request(answer, seq):
    line = add_crc(json.dumps(answer, separators=(",", ":")), seq).encode() + b"\r\n"
    sorted_line = AnswerReader().sort(line, seq)
    assert sorted_line.kind == "answer" and sorted_line.body == answer


@FAST
@given(raw=st.binary(max_size=300), seq=st.integers(0, 0xFFFF))
def test_any_line_from_the_card_is_sorted_and_never_raises(raw, seq):
    assert AnswerReader().sort(raw, seq).kind in ("answer", "stale", "corrupt", "junk")


@FAST
@given(data=st.binary(max_size=2000))
def test_cobs_round_trips_and_never_puts_a_newline_on_the_wire(data):
    wire = cobs_encode(data)
    assert b"\n" not in wire and cobs_decode(wire) == data


@FAST
@given(wire=st.binary(max_size=600))
def test_cobs_decoding_garbage_fails_only_with_its_error(wire):
    try:
        cobs_decode(wire)
    except CobsError:
        pass


# ------------------------------------------------------------------ AN3155: client and emulator
@pytest.fixture
def bootloader():
    name = "property-chip"
    registry.forget("stm32", name)
    port = serial_for_url(f"sim://stm32?name={name}&time_scale=0&bootloader=v3crc", timeout=1)
    client = Bootloader(port)
    client.sync()
    yield client, registry.lookup("stm32", name)
    port.close()
    registry.forget("stm32", name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(0, 60 * 1024 // 4).map(lambda n: n * 4), data=st.binary(min_size=1, max_size=256))
def test_what_the_client_writes_the_emulator_holds_and_reads_back(bootloader, offset, data):
    client, chip = bootloader
    address = 0x08000000 + offset
    client.erase(sorted({offset // 1024, (offset + len(data) - 1) // 1024}), extended=True)
    padded = data + b"\xff" * (-len(data) % 4)
    client.write_memory(address, padded)
    assert client.read_memory(address, len(padded)) == padded
    assert client.checksum(address, len(padded)) == stm32_crc(padded)
    assert bytes(chip.flash[offset:offset + len(padded)]) == padded


@FAST
@given(noise=st.binary(max_size=400))
def test_the_emulator_takes_any_bytes_without_failing(noise):
    chip = Stm32Sim(0x420, "v3crc", time_scale=0)
    chip.feed(noise, 0.0)  # whatever it answers, it must not raise
    chip.feed(b"\x7f", 1.0)


# ------------------------------------------------------------------ image files and the control socket
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3000), suffix=st.sampled_from([".bin", ".hex", ".elf"]))
def test_an_image_file_loads_or_is_refused_with_a_clear_error(tmp_path, data, suffix):
    path = tmp_path / f"image{suffix}"
    path.write_bytes(data)
    try:
        segments = load_image(path)
    except NotedfuError as exc:
        assert exc.code.startswith("E_") and exc.exit_code == 2
        return
    assert all(s.data for s in segments)


@FAST
@given(data=st.binary(max_size=600))
def test_signature_trailers_and_firmware_info_never_fail_on_any_image(data):
    payload, signature = split_signed(data)
    assert data.startswith(payload) and (signature is None or len(signature) == 64)
    assert verified_payload(data, None) == payload
    assert isinstance(firmware_info(data), dict)
    assert isinstance(firmware_info(b"firmware::info:" + data), dict)


@FAST
@given(line=st.binary(max_size=400) | requests.map(lambda d: json.dumps(d).encode() + b"\n"))
def test_a_control_request_parses_or_is_refused_with_a_stable_code(line):
    try:
        request = parse_request(line)
    except NotedfuError as exc:
        assert exc.code in ("E_BAD_REQUEST", "E_REQUEST_TOO_LARGE", "E_UNKNOWN_CMD")
        return
    assert isinstance(request, dict) and isinstance(request.get("cmd"), str)



# ------------------------------------------------------------------ update files (.ndfu)
firmware_like = st.binary(min_size=1, max_size=4096).map(lambda b: b"\x00" + b + b'firmware::info:{"version":"9.9.9"}')  # never starts with the magic


def _edited(base: bytes, data) -> bytes:
    """``base`` with a few bytes changed, inserted or removed: what a fix release does to an image (never one
    that starts with the update-file magic: that is refused on purpose, and no STM32 image can: its first word
    is a stack pointer in RAM)."""
    out = bytearray(base)
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(out)))
        action = data.draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "set" and at < len(out):
            out[at] = data.draw(st.integers(0, 255))
        elif action == "insert":
            out[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        elif len(out) > 1:
            del out[at:at + data.draw(st.integers(1, 8))]
    edited = bytes(out) or b"\x00"
    return b"\x00" + edited if edited.startswith(b"NDFUPACK") else edited


@FAST
@given(image=firmware_like, compress=st.booleans())
def test_a_packed_image_unpacks_to_itself(image, compress):
    from notedfu.protocol.ndfu import pack, unpack

    packed = pack(image, compress=compress)
    header, rebuilt = unpack(packed)
    assert rebuilt == image and header.length == len(image)
    assert firmware_info(packed) == firmware_info(image)  # the version readable as Notehub reads it


@FAST
@given(base=firmware_like, data=st.data())
def test_a_delta_applied_to_its_base_rebuilds_the_new_image(base, data):
    from notedfu.protocol.ndfu import pack, unpack

    new = _edited(base, data)
    header, rebuilt = unpack(pack(new, base), lambda h: base)
    assert rebuilt == new and header.base_length == len(base)


@FAST
@given(base=firmware_like, data=st.data())
def test_any_damaged_byte_of_an_update_file_is_refused(base, data):
    """One flipped byte anywhere — header, info or payload — never rebuilds a wrong image: it is refused with
    E_UPDATE_FILE (or E_DELTA_BASE when the flip falls in the base's MD5 or length), or — where it hit bits
    nothing reads, like the padding of a compressed stream's last byte — rebuilds exactly the right one."""
    from notedfu.protocol.ndfu import HEADER_SIZE, DeltaBaseError, UpdateFileError, pack, unpack

    new = _edited(base, data)
    packed = bytearray(pack(new, base if data.draw(st.booleans()) else None))
    at = data.draw(st.integers(0, len(packed) - 1))
    packed[at] ^= data.draw(st.integers(1, 255))
    try:
        _, rebuilt = unpack(bytes(packed), lambda h: base)
    except (UpdateFileError, DeltaBaseError):
        return
    assert rebuilt == new and at >= HEADER_SIZE


def test_an_image_that_starts_like_an_update_file_is_not_packed():
    from notedfu.protocol.ndfu import MAGIC, UpdateFileError, pack

    with pytest.raises(UpdateFileError, match="update file already"):
        pack(MAGIC + b"rest of an image")


@FAST
@given(junk=st.binary(max_size=600))
def test_arbitrary_bytes_after_the_magic_are_refused_cleanly(junk):
    from notedfu.protocol.ndfu import MAGIC, DeltaBaseError, UpdateFileError, unpack

    with pytest.raises((UpdateFileError, DeltaBaseError)):
        unpack(MAGIC + junk, lambda h: b"")
