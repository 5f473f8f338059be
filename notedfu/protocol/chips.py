"""STM32 chip knowledge: product IDs → flash geometry, timing and bootloader quirks.

Values from ST's reference manuals and AN2606 (product IDs, flash-size register
addresses, page and sector layouts); erase/program times are datasheet typicals
used by the emulator's timing model. Where the flash size can be read from the
device (the "flash size" register, in KiB), the flasher reads it and trusts it
over the table's default size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FLASH_BASE = 0x08000000
KIB = 1024


@dataclass(frozen=True)
class Family:
    """What every chip of a family shares."""

    name: str
    flash_size_register: int | None  # address of the 16-bit flash size in KiB; None: not readable
    page_erase_seconds: float  # typical erase time of one page / 16 KiB-equivalent sector unit
    program_seconds_per_256: float  # typical programming time of one 256-byte block
    write_granule: int = 4  # bytes the flash programs at once (pad writes to this)
    quirks: tuple[str, ...] = ()
    size_read_block: int = 2  # bytes to read for the flash size register (aligned blocks where required)
    mass_erase_seconds: float | None = None  # typical whole-flash erase; None: page by page (no mass erase)

    def erase_seconds(self, page_size: int) -> float:
        """Typical time to erase one page of ``page_size`` bytes (sectors are charged per 16 KiB)."""
        return self.page_erase_seconds * max(1, page_size // (16 * KIB))


# Mass erase (typical): F0/F1/F3 tME 20 ms (datasheets: 20-40 ms, the same as one page); F4 8 s at x32
# parallelism (datasheet 8 s typ, 16 s max; ST-Link/CMSIS-DAP users measure ~8 s on an F407); F7 ~8 s (pyOCD
# and MicroPython measurements on an F765); G0 22 ms (max 40.1 ms); L4 22 ms (max 24.6 ms). L0 has no mass
# erase (stm32flash's F_NO_ME) and H7 is not quoted in our sources: the emulator erases those page by page.
# Source: ../shared/reference/research-stm32.md §6.
FAMILIES = {
    "F0": Family("F0", 0x1FFFF7CC, 0.020, 0.0068, mass_erase_seconds=0.020),
    "F1": Family("F1", 0x1FFFF7E0, 0.020, 0.0067, mass_erase_seconds=0.020),
    "F3": Family("F3", 0x1FFFF7CC, 0.020, 0.0067, mass_erase_seconds=0.020),
    "F4": Family("F4", 0x1FFF7A22, 0.250, 0.0010, quirks=(
        "flash size register only readable as part of an aligned 256-byte block",
        "sectors of 16/64/128 KiB: erase takes seconds"), size_read_block=256, mass_erase_seconds=8.0),
    "F7": Family("F7", 0x1FF0F442, 0.250, 0.0010, quirks=("sectors of 32/128/256 KiB",), mass_erase_seconds=8.0),
    "G0": Family("G0", 0x1FFF75E0, 0.022, 0.0027, 8, quirks=(
        "nBOOT_SEL=1 from the factory: the BOOT0 pin is ignored once flash is programmed",),
        mass_erase_seconds=0.022),
    "G4": Family("G4", 0x1FFF75E0, 0.022, 0.0027, 8),
    "L0": Family("L0", 0x1FF8007C, 0.0032, 0.0128, quirks=(
        "bootloader 3.1 rev 7 NACKs a read of the flash size register",)),
    "L4": Family("L4", 0x1FFF75E0, 0.022, 0.0027, 8, mass_erase_seconds=0.022),
    "H7": Family("H7", 0x1FF1E880, 2.000, 0.0010, 32, quirks=("128 KiB sectors; 256-bit flash words",)),
}


@dataclass(frozen=True)
class Chip:
    """One product ID."""

    pid: int
    name: str
    family: Family
    flash_size: int  # bytes, the largest part with this ID unless read from the device
    page_size: int = 0  # uniform pages; 0 when ``sectors`` is used
    sectors: tuple[int, ...] = ()  # sector sizes from the flash base, for F2/F4/F7/H7
    flash_base: int = FLASH_BASE
    notes: tuple[str, ...] = field(default=())

    def pages(self, flash_size: int | None = None) -> list[tuple[int, int]]:
        """(address, size) of every erasable unit of flash, from the base up."""
        size = flash_size or self.flash_size
        units = []
        address = self.flash_base
        if self.sectors:
            sectors = list(self.sectors)
            while address < self.flash_base + size:
                unit = sectors.pop(0) if sectors else self.sectors[-1]
                units.append((address, unit))
                address += unit
        else:
            while address < self.flash_base + size:
                units.append((address, self.page_size))
                address += self.page_size
        return units


def _uniform(pid: int, name: str, family: str, size_kib: int, page: int) -> Chip:
    return Chip(pid, name, FAMILIES[family], size_kib * KIB, page_size=page)


def _sectored(pid: int, name: str, family: str, size_kib: int, sectors_kib: tuple[int, ...]) -> Chip:
    return Chip(pid, name, FAMILIES[family], size_kib * KIB, sectors=tuple(s * KIB for s in sectors_kib))


_F4_SECTORS = (16, 16, 16, 16, 64, 128)  # then 128 KiB onwards
_F7_SECTORS = (32, 32, 32, 32, 128, 256)

CHIPS: dict[int, Chip] = {chip.pid: chip for chip in [
    _uniform(0x444, "STM32F03x", "F0", 32, 1024),
    _uniform(0x445, "STM32F04x", "F0", 32, 1024),
    _uniform(0x440, "STM32F05x/F030x8", "F0", 64, 1024),
    _uniform(0x448, "STM32F07x", "F0", 128, 2048),
    _uniform(0x442, "STM32F09x/F030xC", "F0", 256, 2048),
    _uniform(0x412, "STM32F10x low-density", "F1", 32, 1024),
    _uniform(0x410, "STM32F10x medium-density", "F1", 128, 1024),
    _uniform(0x414, "STM32F10x high-density", "F1", 512, 2048),
    _uniform(0x430, "STM32F10x XL-density", "F1", 1024, 2048),
    _uniform(0x418, "STM32F105/107 connectivity line", "F1", 256, 2048),
    _uniform(0x420, "STM32F100 medium-density value line", "F1", 128, 1024),
    _uniform(0x428, "STM32F100 high-density value line", "F1", 512, 2048),
    _uniform(0x422, "STM32F30xB/C, F358", "F3", 256, 2048),
    _uniform(0x432, "STM32F37x", "F3", 256, 2048),
    _uniform(0x438, "STM32F334/F303x6/8", "F3", 64, 2048),
    _uniform(0x439, "STM32F301/F302x6/8", "F3", 64, 2048),
    _uniform(0x446, "STM32F30xD/E", "F3", 512, 2048),
    _sectored(0x413, "STM32F405/407/415/417", "F4", 1024, _F4_SECTORS),
    _sectored(0x419, "STM32F42x/43x", "F4", 2048, _F4_SECTORS),
    _sectored(0x423, "STM32F401xB/C", "F4", 256, _F4_SECTORS),
    _sectored(0x433, "STM32F401xD/E", "F4", 512, _F4_SECTORS),
    _sectored(0x431, "STM32F411xC/E", "F4", 512, _F4_SECTORS),
    _sectored(0x421, "STM32F446", "F4", 512, _F4_SECTORS),
    _sectored(0x458, "STM32F410", "F4", 128, _F4_SECTORS),
    _sectored(0x449, "STM32F74x/75x", "F7", 1024, _F7_SECTORS),
    _sectored(0x451, "STM32F76x/77x", "F7", 2048, _F7_SECTORS),
    _sectored(0x452, "STM32F72x/73x", "F7", 512, (16, 16, 16, 16, 64, 128)),
    _uniform(0x466, "STM32G03x/04x", "G0", 64, 2048),
    _uniform(0x460, "STM32G07x/08x", "G0", 128, 2048),
    _uniform(0x456, "STM32G05x/06x", "G0", 64, 2048),
    _uniform(0x467, "STM32G0Bx/0Cx", "G0", 512, 2048),
    _uniform(0x468, "STM32G431/441", "G4", 128, 2048),
    _uniform(0x469, "STM32G47x/48x", "G4", 512, 2048),
    _uniform(0x479, "STM32G491/4A1", "G4", 512, 2048),
    _uniform(0x457, "STM32L01x/02x", "L0", 16, 128),
    _uniform(0x425, "STM32L031/041", "L0", 32, 128),
    _uniform(0x417, "STM32L05x/06x", "L0", 64, 128),
    _uniform(0x447, "STM32L07x/08x", "L0", 192, 128),
    _uniform(0x464, "STM32L41x/42x", "L4", 128, 2048),
    _uniform(0x435, "STM32L43x/44x", "L4", 256, 2048),
    _uniform(0x462, "STM32L45x/46x", "L4", 512, 2048),
    _uniform(0x415, "STM32L47x/48x", "L4", 1024, 2048),
    _uniform(0x461, "STM32L496/4A6", "L4", 1024, 2048),
    _uniform(0x470, "STM32L4Rx/4Sx", "L4", 2048, 4096),
    _sectored(0x450, "STM32H74x/75x", "H7", 2048, (128,)),
    _sectored(0x483, "STM32H72x/73x", "H7", 1024, (128,)),
    _uniform(0x480, "STM32H7Ax/7Bx", "H7", 2048, 8192),
]}


def chip_for(pid: int) -> Chip | None:
    """The chip with product ID ``pid``, or ``None`` if unknown."""
    return CHIPS.get(pid)
