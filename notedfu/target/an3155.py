"""The STM32 ROM bootloader's client: AN3155 frames (:mod:`notedfu.protocol.an3155`) moved over a port.

:class:`Bootloader` works with anything with pyserial's ``read``/``write``/
``timeout``/``reset_input_buffer``, with per-command timeouts.
"""

from __future__ import annotations

import termios
import time
from dataclasses import dataclass, field
from typing import Protocol

import serial

from notedfu.errors import TargetError, TargetIO, TargetNack, TargetNoSync, TargetProtocolError, TargetTimeout
from notedfu.protocol.an3155 import (ACK, BUSY, MASS_ERASE, MAX_BLOCK, NACK, SYNC, BootloaderInfo, Cmd,
                                     address_frame, command_frame, count_frame, data_frame, erase_frame,
                                     extended_erase_frame, length_frame, parse_get, xor)

# ------------------------------------------------------------------ client (I/O)
class Port(Protocol):
    """A serial port as pyserial gives it."""

    timeout: float | None

    def read(self, size: int = 1) -> bytes: ...
    def write(self, data: bytes) -> int | None: ...
    def reset_input_buffer(self) -> None: ...


QUIET = 0.25  # no byte for this long: the bootloader has answered everything sent so far
FILLER = b"\xff" * 320  # more than any frame but Extended Erase's (a write is 258 bytes)
FRAME_MAX = 2 * 0xFFF0 + 3  # the longest Extended Erase frame: count, 0xFFF0 page numbers, checksum


@dataclass
class Timeouts:
    """Seconds to wait for each kind of answer (erase can take seconds)."""

    ack: float = 1.0
    write: float = 1.0
    erase_margin: float = 4.0  # × the typical erase time the caller gives; never less than 1 s per page
    mass_erase: float = 35.0
    sync: float = 0.5


@dataclass
class Stats:
    """Bytes each way and commands sent, for benchmarks and events."""

    sent: int = 0
    received: int = 0
    commands: dict[str, int] = field(default_factory=dict)
    known_reads: int = 0  # bytes a Read Memory did not need to fetch again (see Bootloader.read_memory)


_READ_ONLY = frozenset((Cmd.GET, Cmd.GET_VERSION, Cmd.GET_ID, Cmd.READ_MEMORY, Cmd.GET_CHECKSUM))
"""Commands that change no memory: what was read stays known across them."""


class Bootloader:
    """Talks AN3155 to a device whose bootloader is running on ``port``."""

    def __init__(self, port: Port, timeouts: Timeouts | None = None) -> None:
        self.port = port
        self.timeouts = timeouts or Timeouts()
        self.stats = Stats()
        # Memory read in this bootloader session and not changed since. The ROM bootloader changes flash
        # only when told to, so until a command that may change memory (write, erase, protection, Go) or a
        # new sync (a reset may have run the application), a block read once is known: the flash plan's
        # compare after a rollback image check costs no second read-back (seconds on an F1 without CRC).
        self._known: dict[int, bytes] = {}  # start address → the bytes read there

    # -------------------------------------------------------- bytes
    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except serial.SerialTimeoutException as exc:
            raise TargetTimeout(f"the port took no data for {self.port.write_timeout:g} s: nothing reads the other "
                              "end (wiring? the right port?)") from exc
        except (OSError, serial.SerialException, termios.error) as exc:  # termios: a port gone (EIO) mid-read
            raise TargetIO(f"writing to the bootloader failed: {exc}") from exc
        self.stats.sent += len(data)

    def _read(self, count: int, timeout: float, what: str) -> bytes:
        try:
            if self.port.timeout != timeout:  # pyserial re-applies all termios settings on every change
                self.port.timeout = timeout
            data = self.port.read(count)
        except (OSError, serial.SerialException, termios.error) as exc:  # termios: a port gone (EIO) mid-read
            # e.g. pyserial's "device reports readiness to read but returned no data", seen on ptys
            raise TargetIO(f"{what}: reading from the bootloader failed: {exc}") from exc
        self.stats.received += len(data)
        if len(data) != count:
            raise TargetTimeout(f"{what}: no answer from the bootloader within {timeout:g} s "
                              f"({len(data)} of {count} bytes)")
        return data

    def _discard_input(self) -> None:
        try:
            self.port.reset_input_buffer()
        except (OSError, serial.SerialException, termios.error) as exc:
            raise TargetIO(f"the bootloader's port failed: {exc}") from exc

    def _ack(self, what: str, timeout: float | None = None) -> None:
        timeout = timeout or self.timeouts.ack
        deadline = time.monotonic() + timeout
        while True:
            byte = self._read(1, timeout, what)[0]
            if byte == ACK:
                return
            if byte == BUSY and time.monotonic() < deadline:
                continue
            if byte == NACK:
                raise TargetNack(f"{what}: the bootloader answered NACK")
            raise TargetProtocolError(f"{what}: unexpected byte 0x{byte:02x} instead of ACK")

    def _command(self, cmd: int, name: str) -> None:
        if cmd not in _READ_ONLY:
            self._known.clear()
        self.stats.commands[name] = self.stats.commands.get(name, 0) + 1
        self._write(command_frame(cmd))
        self._ack(name)

    # -------------------------------------------------------- commands
    def sync(self, attempts: int = 5) -> None:
        """Send 0x7F until the bootloader answers (ACK, or NACK if it was already synced).

        A host that died mid-command leaves the bootloader waiting for the rest
        of a frame, and a 0x7F is then just one more byte of it. So when 0x7F
        gets no answer, the frame is completed with 0xFF filler — a no-op if it
        was a write, flash bits only clear; a checksum mismatch for anything
        else — until the bootloader answers. The longest frame is an Extended
        Erase, whose count the 0x7F itself may have begun (0x7FFF pages: 64 KiB
        to wait for), so the first try's filler may run to :data:`FRAME_MAX`
        bytes (12.5 s at 115200 baud, only when nothing answers); a chip that
        is not mid-frame answers at once.
        """
        self._known.clear()  # a new session: the application may have run (and written flash) since
        for attempt in range(attempts):
            self._discard_input()
            self._write(bytes([SYNC]))
            try:
                reply = self._read(1, self.timeouts.sync, "sync")
            except TargetError:
                reply = b""
            if reply in (bytes([ACK]), bytes([NACK])):
                return
            if self._fill_frame(FRAME_MAX if attempt == 0 else len(FILLER)) and self._realign():
                return
        raise TargetNoSync(f"no answer to the bootloader sync (0x7F) after {attempts} tries: is BOOT0 high and "
                          "the target reset, the wiring TX↔RX, the port 8E1 (not the Pi's mini UART)?")

    def _realign(self) -> bool:
        """After filler: the bootloader takes commands as byte pairs (code, complement) and NACKs a bad pair,
        so the filler's tail may leave it holding the first byte of a pair. Let the NACKs die down, then send
        single 0xFF bytes until one is NACKed: from then on it holds nothing."""
        # Filler may still be crossing the wire (several blocks, if the host wrote on while waiting), each
        # pair of it answered with a NACK: wait until the line has been quiet for a while, so that no late
        # NACK is taken for the probe's.
        quiet_since, give_up = time.monotonic(), time.monotonic() + 5.0
        while time.monotonic() - quiet_since < QUIET and time.monotonic() < give_up:
            time.sleep(0.02)
            if getattr(self.port, "in_waiting", 0):
                self._discard_input()
                quiet_since = time.monotonic()
        for _ in range(2):
            self._discard_input()
            self._write(b"\xff")
            try:
                if self._read(1, 0.1, "realign") == bytes([NACK]):
                    return True
            except TargetError:
                continue
        return False

    def _fill_frame(self, limit: int) -> bool:
        """Send up to ``limit`` bytes of 0xFF until the bootloader answers a frame it was waiting for.

        Each block is followed by a read as long as the block takes on the wire
        (11 bits per byte), so the filler goes no faster than the chip takes it
        even where writes return at once (a pty, a deep USB buffer).
        """
        block_seconds = len(FILLER) * 11 / (getattr(self.port, "baudrate", None) or 115200)
        sent = 0
        while sent < limit:
            self._write(FILLER)
            sent += len(FILLER)
            wait = 0.2 if sent == len(FILLER) else block_seconds  # the first block completes any ordinary frame
            try:
                if self._read(1, wait, "sync filler") in (bytes([ACK]), bytes([NACK])):
                    return True
            except TargetError:
                continue
        return False

    def get(self) -> tuple[int, tuple[int, ...]]:
        """Get (0x00): bootloader version and command codes."""
        self._command(Cmd.GET, "get")
        count = self._read(1, self.timeouts.ack, "get")[0]
        body = self._read(count + 1, self.timeouts.ack, "get")
        self._ack("get")
        return parse_get(bytes([count]) + body)

    def get_version(self) -> tuple[int, int, int]:
        """Get Version (0x01): version and the two option bytes (UART)."""
        self._command(Cmd.GET_VERSION, "get_version")
        reply = self._read(3, self.timeouts.ack, "get_version")
        self._ack("get_version")
        return reply[0], reply[1], reply[2]

    def get_id(self) -> int:
        """Get ID (0x02): the product ID (e.g. 0x410)."""
        self._command(Cmd.GET_ID, "get_id")
        count = self._read(1, self.timeouts.ack, "get_id")[0]
        reply = self._read(count + 1, self.timeouts.ack, "get_id")
        self._ack("get_id")
        return int.from_bytes(reply[:2], "big")

    def info(self) -> BootloaderInfo:
        """Get + Get Version + Get ID."""
        version, commands = self.get()
        _, opt1, opt2 = self.get_version()
        return BootloaderInfo(version, commands, self.get_id(), (opt1, opt2))

    def read_memory(self, address: int, count: int) -> bytes:
        """Read Memory (0x11): ``count`` ≤ 256 bytes at ``address`` (a block read before in this session and
        not changed since is not fetched again)."""
        known = self._known_bytes(address, count)
        if known is not None:
            self.stats.known_reads += count
            return known
        self._command(Cmd.READ_MEMORY, "read")
        self._write(address_frame(address))
        self._ack("read address")
        self._write(count_frame(count))
        self._ack("read count")
        data = self._read(count, self.timeouts.ack, "read data")
        if len(data) >= len(self._known.get(address, b"")):
            self._known[address] = data
        return data

    def _known_bytes(self, address: int, count: int) -> bytes | None:
        """``count`` bytes at ``address`` from a block read earlier in this session that covers them: one read
        from ``address`` itself, or from the 256-byte boundary below it (where page and block reads start)."""
        for start in (address, address - address % MAX_BLOCK):
            data = self._known.get(start)
            if data is not None and address + count <= start + len(data):
                return data[address - start:address - start + count]
        return None

    def write_memory(self, address: int, data: bytes) -> None:
        """Write Memory (0x31): ≤ 256 bytes; address and length must be 4-byte aligned."""
        if address % 4 or len(data) % 4:
            raise ValueError("write address and length must be multiples of 4")
        self._command(Cmd.WRITE_MEMORY, "write")
        self._write(address_frame(address))
        self._ack("write address")
        self._write(data_frame(data))
        self._ack("write data", self.timeouts.write)

    def erase(self, pages: list[int], extended: bool, typical_seconds: float = 0.0) -> None:
        """Erase pages with Extended Erase (0x44) or legacy Erase (0x43); ``typical_seconds`` is how long the
        chip usually takes for them all (the caller knows its pages; the answer may take a few times that)."""
        name = "extended_erase" if extended else "erase"
        self._command(Cmd.EXTENDED_ERASE if extended else Cmd.ERASE, name)
        self._write(extended_erase_frame(pages) if extended else erase_frame(pages))
        self._ack(name, self.timeouts.ack + max(float(len(pages)), self.timeouts.erase_margin * typical_seconds))

    def mass_erase(self, extended: bool) -> None:
        """Erase all of flash."""
        name = "extended_erase" if extended else "erase"
        self._command(Cmd.EXTENDED_ERASE if extended else Cmd.ERASE, name)
        self._write(extended_erase_frame(special=MASS_ERASE) if extended else b"\xff\x00")
        self._ack(name + " (mass)", self.timeouts.mass_erase)

    def go(self, address: int) -> None:
        """Go (0x21): jump to the application at ``address``; the bootloader stops answering."""
        self._command(Cmd.GO, "go")
        self._write(address_frame(address))
        self._ack("go address")

    def checksum(self, address: int, length: int) -> int:
        """Get Checksum (0xA1): the STM32 CRC of ``length`` bytes at ``address``."""
        self._command(Cmd.GET_CHECKSUM, "crc")
        self._write(address_frame(address))
        self._ack("crc address")
        self._write(length_frame(length))
        self._ack("crc length")
        self._ack("crc result", self.timeouts.ack + length * 1e-6)
        reply = self._read(5, self.timeouts.ack, "crc result")
        if xor(reply[:4]) != reply[4]:
            raise TargetProtocolError("crc result: bad checksum byte")
        return int.from_bytes(reply[:4], "big")

    def _reset_command(self, cmd: int, name: str, payload: bytes | None, timeout: float) -> None:
        self._command(cmd, name)
        if payload is not None:
            self._write(payload)
        self._ack(name, timeout)

    def write_unprotect(self) -> None:
        """Write Unprotect (0x73); the device resets afterwards (sync again)."""
        self._reset_command(Cmd.WRITE_UNPROTECT, "write_unprotect", None, self.timeouts.mass_erase)

    def readout_unprotect(self) -> None:
        """Readout Unprotect (0x92): MASS-ERASES the flash, then the device resets."""
        self._reset_command(Cmd.READOUT_UNPROTECT, "readout_unprotect", None, self.timeouts.mass_erase)

    def readout_protect(self) -> None:
        """Readout Protect (0x82); the device resets afterwards."""
        self._reset_command(Cmd.READOUT_PROTECT, "readout_protect", None, self.timeouts.mass_erase)
