"""Blues' note-c, built from a local checkout and driven through ctypes against the simulated Notecard.

note-c is the library the Notecard's own firmware team ships for host MCUs
(Arduino, STM32 HAL, ESP-IDF…), so a simulator it accepts behaves like the
card where it matters to other people's code: the ``crc`` field note-c finds
at a fixed offset, the I2C ``available`` count its binary receive relies on,
its pacing. Nothing of note-c is committed here: set ``NOTEDFU_NOTE_C`` to a
checkout of https://github.com/blues/note-c (or a ``git`` directory of one)
and the interoperability tests build it with the system C compiler; without it
they skip (CI has no network to fetch it).

The hooks note-c calls for bytes are Python callbacks into the simulator's own
byte-level ports: :class:`~notedfu.sim.cardport.CardPort` for serial and
:class:`~notedfu.sim.i2c.SimI2CBus` for I2C, the same objects behind
``sim://`` URLs and ptys.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from smbus2 import i2c_msg

ENV = "NOTEDFU_NOTE_C"


def source_dir() -> Path | None:
    """The note-c sources named by ``$NOTEDFU_NOTE_C`` (a checkout, or a bare git directory)."""
    where = os.environ.get(ENV)
    if not where:
        return None
    path = Path(where)
    if (path / "n_request.c").exists():
        return path
    if (path / "HEAD").exists() or (path / ".git").exists():  # a git directory: export its HEAD
        out = Path(tempfile.mkdtemp(prefix="note-c-"))
        archive = subprocess.run(["git", "--git-dir", str(path if (path / "HEAD").exists() else path / ".git"),
                                  "archive", "HEAD"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
        return out if (out / "n_request.c").exists() else None
    return None


def build(src: Path) -> Path:
    """``libnotec.so`` from ``src``, cached by the sources' hash."""
    sources = sorted(src.glob("n_*.c"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources + [src / "note.h"])).hexdigest()[:16]
    lib = Path(tempfile.gettempdir()) / f"notedfu-libnotec-{digest}.so"
    if not lib.exists():
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([shutil.which("cc") or "gcc", "-shared", "-fPIC", "-O1", "-o", str(tmp),
                        *map(str, sources)], check=True, capture_output=True)
        os.replace(tmp, lib)
    return lib


MALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t)
FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
DELAY = ctypes.CFUNCTYPE(None, ctypes.c_uint32)
MILLIS = ctypes.CFUNCTYPE(ctypes.c_uint32)
SERIAL_RESET = ctypes.CFUNCTYPE(ctypes.c_bool)
SERIAL_TX = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t, ctypes.c_bool)
SERIAL_AVAIL = ctypes.CFUNCTYPE(ctypes.c_bool)
SERIAL_RX = ctypes.CFUNCTYPE(ctypes.c_char)
I2C_RESET = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_uint16)
I2C_TX = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint16, ctypes.POINTER(ctypes.c_uint8), ctypes.c_uint16)
I2C_RX = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint16, ctypes.POINTER(ctypes.c_uint8), ctypes.c_uint16,
                          ctypes.POINTER(ctypes.c_uint32))


class NoteC:
    """One loaded note-c library (it keeps global state: one per process)."""

    def __init__(self, lib_path: Path) -> None:
        self.lib = ctypes.CDLL(str(lib_path))
        libc = ctypes.CDLL(None)
        lib = self.lib
        lib.JParse.restype = ctypes.c_void_p
        lib.JParse.argtypes = [ctypes.c_char_p]
        lib.NoteRequestResponse.restype = ctypes.c_void_p
        lib.NoteRequestResponse.argtypes = [ctypes.c_void_p]
        lib.JPrintUnformatted.restype = ctypes.c_void_p
        lib.JPrintUnformatted.argtypes = [ctypes.c_void_p]
        lib.JDelete.argtypes = [ctypes.c_void_p]
        lib.JFree.argtypes = [ctypes.c_void_p]
        lib.NoteBinaryStoreReceive.restype = ctypes.c_char_p
        lib.NoteBinaryStoreReceive.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32]
        lib.NoteBinaryCodecMaxEncodedLength.restype = ctypes.c_uint32
        lib.NoteSetLogLevel.argtypes = [ctypes.c_int]
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        start = time.monotonic()
        self._keep = [MALLOC(lambda n: libc.malloc(n)), FREE(lambda p: libc.free(p)),
                      DELAY(lambda ms: time.sleep(ms / 1000)),
                      MILLIS(lambda: int((time.monotonic() - start) * 1000) & 0xFFFFFFFF)]
        lib.NoteSetFnDefault(*self._keep)

    def use_serial(self, port) -> None:
        """Talk to a :class:`CardPort` as if it were a UART."""
        def transmit(buf, size, flush):
            port.feed(ctypes.string_at(buf, size), time.monotonic())

        def available():
            return port.available(time.monotonic()) > 0

        def receive():
            data = port.read(1, time.monotonic())
            return data if data else b"\0"

        hooks = [SERIAL_RESET(lambda: True), SERIAL_TX(transmit), SERIAL_AVAIL(available), SERIAL_RX(receive)]
        self._keep.append(hooks)
        self.lib.NoteSetFnSerial(*hooks)

    def use_i2c(self, bus) -> None:
        """Talk to a :class:`SimI2CBus` as note-c's Arduino hooks talk to Wire."""
        def transmit(address, buf, size):
            try:
                bus.i2c_rdwr(i2c_msg.write(address, bytes([size]) + ctypes.string_at(buf, size)))
            except OSError:
                return ctypes.cast(ctypes.c_char_p(b"i2c: write NACK {io}"), ctypes.c_void_p).value
            return None

        def receive(address, buf, size, available):
            ask, answer = i2c_msg.write(address, bytes([0, size])), i2c_msg.read(address, size + 2)
            try:
                bus.i2c_rdwr(ask, answer)
            except OSError:
                return ctypes.cast(ctypes.c_char_p(b"i2c: read NACK {io}"), ctypes.c_void_p).value
            raw = bytes(answer)
            if raw[1] != size:
                return ctypes.cast(ctypes.c_char_p(b"i2c: bad length {io}"), ctypes.c_void_p).value
            ctypes.memmove(buf, raw[2:], size)
            available[0] = raw[0]
            return None

        hooks = [I2C_RESET(lambda address: True), I2C_TX(transmit), I2C_RX(receive)]
        self._keep.append(hooks)
        self.lib.NoteSetFnI2C(0, 0, *hooks)

    def request(self, json_text: str) -> str:
        """``NoteRequestResponse`` (CRC, retries and all) of a JSON request; the answer as JSON text."""
        req = self.lib.JParse(json_text.encode())
        assert req, "note-c could not parse the request"
        rsp = self.lib.NoteRequestResponse(req)
        assert rsp, "note-c returned no response"
        text = self.lib.JPrintUnformatted(rsp)
        try:
            return ctypes.string_at(text).decode()
        finally:
            self.lib.JFree(text)
            self.lib.JDelete(rsp)

    def binary_receive(self, length: int) -> bytes:
        """``NoteBinaryStoreReceive`` of ``length`` bytes; raises with note-c's error text."""
        size = self.lib.NoteBinaryCodecMaxEncodedLength(length) + 1
        buffer = ctypes.create_string_buffer(size)
        err = self.lib.NoteBinaryStoreReceive(buffer, size, 0, length)
        if err:
            raise RuntimeError(err.decode())
        return buffer.raw[:length]
