"""Coverage-guided fuzzing (atheris) of every parser of outside input; the same targets as the hypothesis
properties in ``test_properties.py``, for long runs.

    .venv/bin/pip install -e '.[fuzz]'
    .venv/bin/python tests/fuzz.py TARGET -runs=1000000        # TARGET: one of TARGETS below

A target passes when no input raises anything but the parser's documented error.
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from notedfu.errors import NotedfuError
    from notedfu.protocol.cobs import CobsError, cobs_decode
    from notedfu.protocol.firmware import firmware_info
    from notedfu.protocol.ndfu import MAGIC, DeltaBaseError, UpdateFileError, unpack
    from notedfu.protocol.notecard import AnswerReader, check_crc
    from notedfu.sim.stm32 import Stm32Sim
    from notedfu.target.image import load_image
    from notedfu.update.control import parse_request
    from notedfu.update.signature import split_signed, verified_payload

_READER = AnswerReader()
_DIR = tempfile.mkdtemp(prefix="notedfu-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def notecard_answer(data: bytes) -> None:
    """A line from the card, as the host sorts it, and a request line, as the card reads it."""
    _READER.sort(data, 1)
    check_crc(data)


def cobs(data: bytes) -> None:
    """Binary-mode data from the card."""
    try:
        cobs_decode(data)
    except CobsError:
        pass


def an3155(data: bytes) -> None:
    """Bytes from a host, as the emulated bootloader takes them (the client's frames are built, not parsed)."""
    chip = Stm32Sim(0x420, "v3crc", time_scale=0)
    chip.feed(data, 0.0)


def image(data: bytes) -> None:
    """An image file of each kind notedfu flashes."""
    for suffix in (".bin", ".hex", ".elf"):
        path = os.path.join(_DIR, "image" + suffix)
        with open(path, "wb") as out:
            out.write(data)
        try:
            load_image(path)
        except NotedfuError:
            pass


def trailer(data: bytes) -> None:
    """A signature trailer and the firmware::info marker, on any image."""
    split_signed(data)
    verified_payload(data, None)
    firmware_info(data)
    firmware_info(b"firmware::info:" + data)


def control(data: bytes) -> None:
    """A request line on the daemon's control socket."""
    try:
        parse_request(data)
    except NotedfuError:
        pass


def update_file(data: bytes) -> None:
    """An update file (.ndfu) as downloaded: header, info and payload; the base is the input's own start."""
    try:
        unpack(MAGIC + data, lambda header: data[:header.base_length])
    except (UpdateFileError, DeltaBaseError):
        pass


TARGETS = {f.__name__: f for f in (notecard_answer, cobs, an3155, image, trailer, control, update_file)}


def main() -> None:
    """``fuzz.py TARGET [libFuzzer options]``."""
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: fuzz.py {{{','.join(TARGETS)}}} [-runs=N …]")
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
