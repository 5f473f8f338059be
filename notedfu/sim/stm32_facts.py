"""What the emulated STM32 bootloader is: its versions and command sets (AN2606), memory map and faults."""

from __future__ import annotations

from dataclasses import dataclass

from notedfu.protocol.chips import Chip

STM32_FAULTS = {
    "nack": "NACK the N-th Write Memory block",
    "drop": "lose the final ACK of the N-th block (the host times out)",
    "reset": "the chip resets during the N-th block: nothing written, sync needed",
    "power": "power lost during the N-th block: half of it written, sync needed",
    "wprot": "page N is write-protected: writes are ACKed and do nothing",
    "nogo": "NACK the N-th Go command (the application is not started)",
}
RAM_BASE, RAM_SIZE = 0x20000000, 8 * 1024
SYSTEM_BASE, SYSTEM_SIZE = 0x1FF00000, 0x100000  # system memory and option bytes: read as 0xFF

V2_COMMANDS = (0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x43, 0x63, 0x73, 0x82, 0x92)
V3_COMMANDS = (0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x44, 0x63, 0x73, 0x82, 0x92)


@dataclass(frozen=True)
class BootloaderVariant:
    """A bootloader version and its command set."""

    name: str
    version: int
    commands: tuple[int, ...]


VARIANTS = {
    "v2": BootloaderVariant("v2", 0x22, V2_COMMANDS),
    "v3": BootloaderVariant("v3", 0x31, V3_COMMANDS),
    "v3crc": BootloaderVariant("v3crc", 0x31, V3_COMMANDS + (0xA1,)),
}


def default_variant(chip: Chip) -> BootloaderVariant:
    """What the chip's family ships: 2.x with legacy erase on F0/F1/F3, 3.1 elsewhere."""
    return VARIANTS["v2" if chip.family.name in ("F0", "F1", "F3") else "v3"]
