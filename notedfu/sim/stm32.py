"""An emulated STM32 system-memory bootloader, byte-accurate (AN3155 over USART).

:class:`Stm32Sim` is a state machine fed with bytes; it answers exactly as
the ROM bootloader does — sync, complements and XOR checksums enforced (a bad
frame is NACKed), flash bits only going 1→0 without an erase, per-chip page
layout, the command set of the chosen bootloader version (with or without
Get Checksum 0xA1), readout protection (only Get / Get Version / Get ID
and Readout Unprotect answered) — with erase and programming times from the chip table and 8E1 wire
time (11 bits per byte). Flash can live in a file (``flash_file``) so a later
step (QEMU, the demo) boots what was flashed.

Fault specs (``KIND[@N][+]``, N counts Write Memory commands, or pages for
``wprot``): ``nack`` (refuse the block), ``drop`` (lose the final ACK: the host
times out), ``reset`` (the chip resets mid-write: nothing written, sync needed),
``power`` (power lost mid-write: half the block written, sync needed),
``wprot`` (page N is write-protected: ACKs, writes nothing).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, Generator

from notedfu.sim.clock import WALL, Clock
from notedfu.sim.faults import Fault, parse_faults
from notedfu.specs import check_option_names
from notedfu.sim.timing import PacedOutputMixin, PacedQueue
from notedfu.protocol.an3155 import ACK, NACK, SYNC, Cmd, stm32_crc, xor
from notedfu.protocol.chips import CHIPS, Chip
from notedfu.sim.stm32_facts import (RAM_BASE, RAM_SIZE, STM32_FAULTS, SYSTEM_BASE, SYSTEM_SIZE, VARIANTS,
                                     BootloaderVariant, default_variant)
from notedfu.sim.stm32_protection import ProtectionCommands

class Stm32Sim(ProtectionCommands, PacedOutputMixin):
    """The bootloader's state and behaviour; bytes in, timed bytes out."""

    def __init__(self, chip: Chip | int = 0x420, variant: BootloaderVariant | str | None = None, *,
                 flash_file: str | Path | None = None, baud: int = 115200, faults: list[Fault] | None = None,
                 readout_protected: bool = False, time_scale: float = 1.0, clock: Clock = WALL) -> None:
        self.clock = clock  # the wire's time, read by the servers that carry the chip's bytes
        self.chip = chip if isinstance(chip, Chip) else CHIPS[chip]
        self.variant = VARIANTS[variant] if isinstance(variant, str) else (variant or default_variant(self.chip))
        self.byte_seconds = 11 / baud  # 8E1: start + 8 data + parity + stop
        self.time_scale = time_scale
        self.faults = faults or []
        self.readout_protected = readout_protected
        self.pages = self.chip.pages()
        self.flash = bytearray(b"\xff" * self.chip.flash_size)
        self.ram = bytearray(RAM_SIZE)
        self._fd: int | None = None
        if flash_file is not None:
            self._open_flash_file(Path(flash_file))
        self.write_protected = {f.at for f in self.faults if f.kind == "wprot"}
        self.output = PacedQueue(self.byte_seconds)
        self.lock = threading.RLock()
        self.boot0 = True  # with no line control the board is strapped for the bootloader
        self._hold_reset = False
        self.running_app = False
        self.app_starts = 0
        self.go_commands = 0
        self.synced = False
        self.writes = self.writes_done = 0  # Write Memory commands begun, and those whose effect is in flash
        self.write_log: list[int] = []  # addresses of completed Write Memory commands, in order
        # Called with (address, length) once a Write Memory command has fully arrived, before it is programmed;
        # returning "power" cuts the power half way through programming it (a rig's kill-point matrix).
        self.on_write: Callable[[int, int], str | None] | None = None
        self.stats = {"erased_pages": 0, "written_blocks": 0, "read_bytes": 0, "crc_commands": 0}
        self._in_free = 0.0
        self._now = 0.0
        self._busy_until = 0.0
        self._pending = bytearray()
        self._parser = self._protocol()
        self._need = next(self._parser)

    # -------------------------------------------------------- flash file
    def _open_flash_file(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        existing = os.pread(fd, self.chip.flash_size, 0)
        self.flash[:len(existing)] = existing
        if len(existing) < self.chip.flash_size:
            os.pwrite(fd, bytes(self.flash[len(existing):]), len(existing))
        self._fd = fd

    def _store(self, offset: int, length: int) -> None:
        if self._fd is not None:
            os.pwrite(self._fd, bytes(self.flash[offset:offset + length]), offset)

    def close(self) -> None:
        """Close the flash file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -------------------------------------------------------- lines
    def set_lines(self, *, boot0: bool | None = None, reset: bool | None = None) -> None:
        """Drive BOOT0 (True = high) and NRST (True = held in reset); releasing NRST boots."""
        with self.lock:
            if boot0 is not None:
                self.boot0 = boot0
            if reset is True:
                self._hold_reset = True
            elif reset is False and self._hold_reset:
                self._hold_reset = False
                self.power_on_reset()

    def power_on_reset(self) -> None:
        """Start from reset: the bootloader if BOOT0 is high, the application otherwise."""
        with self.lock:
            self.output.clear()
            self._pending.clear()
            self.synced = False
            self._parser = self._protocol()
            self._need = next(self._parser)
            self.running_app = not self.boot0
            if self.running_app:
                self.app_starts += 1

    # -------------------------------------------------------- bytes
    def feed(self, data: bytes, now: float) -> None:
        """Bytes from the host, written at ``now`` (they arrive at wire speed)."""
        with self.lock:
            if self.running_app or self._hold_reset:
                return  # the application does not speak AN3155; a chip in reset hears nothing
            arrived = max(now, self._in_free) + len(data) * self.byte_seconds
            self._in_free = arrived
            self._now = max(arrived, self._busy_until)
            self._pending += data
            while len(self._pending) >= self._need and not self.running_app:
                chunk = bytes(self._pending[:self._need])
                del self._pending[:self._need]
                self._need = self._parser.send(chunk)

    def _send(self, data: bytes, work_seconds: float = 0.0) -> None:
        at = self._now + work_seconds * self.time_scale
        self._busy_until = at
        self._now = at
        self.output.push(data, at)

    def _fault(self, kind: str, number: int) -> bool:
        for fault in self.faults:
            if fault.kind == kind and fault.due(number):
                fault.fired += 1
                return True
        return False

    # -------------------------------------------------------- protocol
    def _protocol(self) -> Generator[int, bytes, None]:
        """The bootloader: ``data = yield n`` waits for n bytes."""
        while True:
            first = (yield 1)[0]
            if not self.synced:
                if first == SYNC:
                    self.synced = True
                    self._send(bytes([ACK]))
                continue  # noise before the sync byte is ignored
            if first == SYNC:
                self._send(bytes([NACK]))  # already synced
                continue
            second = (yield 1)[0]
            if second != first ^ 0xFF or first not in self.variant.commands or (
                    self.readout_protected and first not in (Cmd.GET, Cmd.GET_VERSION, Cmd.GET_ID,
                                                             Cmd.READOUT_UNPROTECT)):
                self._send(bytes([NACK]))
                continue
            self._send(bytes([ACK]))
            handler = {
                Cmd.GET: self._get, Cmd.GET_VERSION: self._get_version, Cmd.GET_ID: self._get_id,
                Cmd.READ_MEMORY: self._read_memory, Cmd.GO: self._go, Cmd.WRITE_MEMORY: self._write_memory,
                Cmd.ERASE: self._erase, Cmd.EXTENDED_ERASE: self._extended_erase,
                Cmd.GET_CHECKSUM: self._checksum, Cmd.READOUT_PROTECT: self._readout_protect,
                Cmd.READOUT_UNPROTECT: self._readout_unprotect, Cmd.WRITE_UNPROTECT: self._write_unprotect,
                Cmd.WRITE_PROTECT: self._write_protect,
            }[first]
            yield from handler()

    def _address(self) -> Generator[int, bytes, int | None]:
        raw = yield 5
        if xor(raw[:4]) != raw[4]:
            self._send(bytes([NACK]))
            return None
        return int.from_bytes(raw[:4], "big")

    def _region(self, address: int, length: int) -> tuple[bytearray, int] | None:
        """The memory behind [address, address+length), as (buffer, offset)."""
        base = self.chip.flash_base
        if base <= address and address + length <= base + self.chip.flash_size:
            return self.flash, address - base
        if RAM_BASE <= address and address + length <= RAM_BASE + RAM_SIZE:
            return self.ram, address - RAM_BASE
        return None

    def _page_of(self, offset: int) -> int:
        for index, (address, size) in enumerate(self.pages):
            if address - self.chip.flash_base <= offset < address - self.chip.flash_base + size:
                return index
        return -1

    def _get(self):
        body = bytes([self.variant.version, *self.variant.commands])
        self._send(bytes([len(body) - 1]) + body + bytes([ACK]))
        return
        yield  # a generator that needs no more bytes

    def _get_version(self):
        self._send(bytes([self.variant.version, 0x00, 0x00, ACK]))
        return
        yield

    def _get_id(self):
        self._send(bytes([0x01, self.chip.pid >> 8, self.chip.pid & 0xFF, ACK]))
        return
        yield

    def _read_memory(self):
        address = yield from self._address()
        if address is None:
            return
        self._send(bytes([ACK]))
        count = yield 2
        if count[1] != count[0] ^ 0xFF:
            self._send(bytes([NACK]))
            return
        length = count[0] + 1
        self._send(bytes([ACK]))
        region = self._region(address, length)
        if region is not None:
            buffer, offset = region
            data = bytes(buffer[offset:offset + length])
        elif SYSTEM_BASE <= address < SYSTEM_BASE + SYSTEM_SIZE:
            data = bytearray(b"\xff" * length)
            register = self.chip.family.flash_size_register
            if register is not None and address <= register < address + length - 1:
                kib = self.chip.flash_size // 1024
                data[register - address:register - address + 2] = kib.to_bytes(2, "little")
            data = bytes(data)
        else:
            self._send(bytes([NACK]))
            return
        self.stats["read_bytes"] += length
        self._send(data)

    def _go(self):
        address = yield from self._address()
        if address is None:
            return
        self.go_commands += 1
        if self._fault("nogo", self.go_commands):
            self._send(bytes([NACK]))
            return
        self._send(bytes([ACK]))
        self.running_app = True
        self.app_starts += 1

    def _write_memory(self):
        address = yield from self._address()
        if address is None:
            return
        self._send(bytes([ACK]))
        count = (yield 1)[0]
        data = yield count + 2
        payload, checksum = data[:-1], data[-1]
        region = self._region(address, len(payload))
        if xor(bytes([count]) + payload) != checksum or region is None or address % 4:
            self._send(bytes([NACK]))
            return
        self.writes += 1
        number = self.writes
        buffer, offset = region
        seconds = self.chip.family.program_seconds_per_256 * len(payload) / 256
        if self._fault("nack", number):
            self._send(bytes([NACK]), seconds)
            return
        if self._fault("reset", number):
            self._chip_reset()
            return
        action = self.on_write(address, len(payload)) if self.on_write else None
        if action == "power" or self._fault("power", number):
            self._program(buffer, offset, payload[:len(payload) // 2])
            self._chip_reset()
            self.writes_done = number
            return
        self._program(buffer, offset, payload)
        self.writes_done = number  # its effect is in flash (a test that killed the host in on_write waits for it)
        self.stats["written_blocks"] += 1
        self.write_log.append(address)
        if self._fault("drop", number):
            self._now += seconds * self.time_scale
            return
        self._send(bytes([ACK]), seconds)

    def _program(self, buffer: bytearray, offset: int, payload: bytes) -> None:
        """Flash bits only go from 1 to 0; a write-protected page keeps its contents."""
        if buffer is self.flash and self._page_of(offset) in self.write_protected:
            return
        for i, byte in enumerate(payload):
            buffer[offset + i] &= byte
        if buffer is self.flash:
            self._store(offset, len(payload))

    def _chip_reset(self, lose_output: bool = True) -> None:
        """The chip restarts into the bootloader; answers already on the wire survive unless power was lost."""
        if lose_output:
            self.output.clear()
        self.synced = False
        self._pending.clear()

    def _erase_pages(self, pages: list[int], mass: bool = False) -> bool:
        if any(not 0 <= p < len(self.pages) for p in pages):
            return False
        for page in pages:
            address, size = self.pages[page]
            if page in self.write_protected:
                continue
            offset = address - self.chip.flash_base
            self.flash[offset:offset + size] = b"\xff" * size
            self._store(offset, size)
            self.stats["erased_pages"] += 1
        whole = self.chip.family.mass_erase_seconds  # one figure for the whole flash where the family has one
        seconds = whole if mass and whole is not None else \
            sum(self.chip.family.erase_seconds(self.pages[p][1]) for p in pages)
        self._send(bytes([ACK]), seconds)
        return True

    def _erase(self):
        count = (yield 1)[0]
        if count == 0xFF:
            if (yield 1)[0] != 0x00:
                self._send(bytes([NACK]))
                return
            self._erase_pages(list(range(len(self.pages))), mass=True)
            return
        rest = yield count + 2
        pages, checksum = list(rest[:-1]), rest[-1]
        if xor(bytes([count]) + bytes(pages)) != checksum or not self._erase_pages(pages):
            self._send(bytes([NACK]))

    def _extended_erase(self):
        head = yield 2
        count = int.from_bytes(head, "big")
        if count >= 0xFFF0:
            if (yield 1)[0] != xor(head) or count not in (0xFFFF, 0xFFFE, 0xFFFD):
                self._send(bytes([NACK]))
                return
            half = len(self.pages) // 2
            pages = {0xFFFF: range(len(self.pages)), 0xFFFE: range(half), 0xFFFD: range(half, len(self.pages))}
            self._erase_pages(list(pages[count]), mass=count == 0xFFFF)
            return
        rest = yield 2 * (count + 1) + 1
        pages = [int.from_bytes(rest[i:i + 2], "big") for i in range(0, 2 * (count + 1), 2)]
        if xor(head + rest[:-1]) != rest[-1] or not self._erase_pages(pages):
            self._send(bytes([NACK]))

    def _checksum(self):
        address = yield from self._address()
        if address is None:
            return
        self._send(bytes([ACK]))
        raw = yield 5
        length = int.from_bytes(raw[:4], "big")
        region = self._region(address, length)
        if xor(raw[:4]) != raw[4] or region is None or address % 4 or length % 4 or length == 0:
            self._send(bytes([NACK]))
            return
        self._send(bytes([ACK]))
        buffer, offset = region
        crc = stm32_crc(bytes(buffer[offset:offset + length])).to_bytes(4, "big")
        self.stats["crc_commands"] += 1
        self._send(bytes([ACK]) + crc + bytes([xor(crc)]), length * 2e-8)


STM32_OPTIONS = frozenset({"chip", "bootloader", "flash_file", "baud", "fault", "rdp", "time_scale", "name", "boot0",
                           "reset"})
"""Every ``sim://stm32`` option (``boot0``/``reset`` wire its lines to the port's RTS/DTR)."""


def stm32_from_options(opts: dict[str, str | list[str]]) -> Stm32Sim:
    """An emulated chip from string options: ``chip`` (PID, hex), ``bootloader`` (v2, v3, v3crc),
    ``flash_file``, ``baud``, ``fault`` (repeatable), ``rdp`` (0/1), ``time_scale``."""
    def one(key: str) -> str | None:
        value = opts.get(key)
        return value[-1] if isinstance(value, list) else value

    check_option_names(opts, STM32_OPTIONS, "sim://stm32")
    pid = int(one("chip") or "0x420", 16)
    if pid not in CHIPS:
        raise ValueError(f"unknown chip id 0x{pid:03x} (known: {', '.join(f'0x{p:03x}' for p in sorted(CHIPS))})")
    variant = one("bootloader")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"unknown bootloader variant {variant!r} (known: {', '.join(VARIANTS)})")
    faults = opts.get("fault") or []
    return Stm32Sim(pid, variant, flash_file=one("flash_file"), baud=int(one("baud") or 115200),
                    faults=parse_faults(faults if isinstance(faults, list) else [faults], STM32_FAULTS),
                    readout_protected=(one("rdp") or "0") in ("1", "true", "yes"),
                    time_scale=float(one("time_scale") or 1.0))
