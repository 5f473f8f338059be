"""The flash plan, pure: which pages an image covers, what each must hold, which 256-byte blocks are all
0xFF (nothing to write after an erase) — and the checks an image must pass before any of it runs.
:mod:`notedfu.target.flasher` executes it."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from notedfu.errors import TargetError, UsageError
from notedfu.protocol.an3155 import MAX_BLOCK
from notedfu.protocol.chips import Chip, Family
from notedfu.target.image import Segment

RAM_RANGE = (0x20000000, 0x20200000)


@dataclass(frozen=True)
class PagePlan:
    """One erasable unit and what it must hold afterwards."""

    index: int
    address: int
    size: int
    content: bytes  # the whole page after flashing (0xFF where the image has nothing)
    verify_from: int  # offset range inside the page that the image defines
    verify_to: int

    def blocks(self, skip_erased: bool = True) -> list[tuple[int, bytes]]:
        """(address, data) blocks to write, ≤ 256 bytes, all-0xFF blocks skipped."""
        out = []
        start = self.verify_from - self.verify_from % 4
        while start < self.verify_to:
            end = min(start + MAX_BLOCK - start % MAX_BLOCK, self.verify_to)
            end += -end % 4
            block = self.content[start:end]
            if not (skip_erased and block.count(0xFF) == len(block)):
                out.append((self.address + start, block))
            start = end
        return out


@dataclass
class FlashPlan:
    """Everything the flasher will do, decided before the chip is touched."""

    pages: list[PagePlan]
    image_bytes: int
    first: PagePlan | None = None  # the page holding the flash base, written last
    vector_bytes: int = 8  # the head of the first page written after everything else (SP + reset vector)
    family: Family | None = None  # the chip's family: how long its pages take to erase

    @property
    def write_bytes(self) -> int:
        """Bytes that will actually be sent in Write Memory commands."""
        return sum(len(b) for page in self.pages for _, b in page.blocks())


@dataclass
class FlashOptions:
    """Choices of the flasher."""

    verify: str = "auto"  # auto (CRC command if offered, else read-back), crc, read, none
    retries: int = 2  # re-erase + rewrite attempts per page after a failure
    preserve: list[tuple[int, int]] = field(default_factory=list)  # [start, end) regions never erased
    allow_offset: bool = False  # image may start above the flash base (behind a custom bootloader)
    check_vectors: bool = True  # refuse images whose vector table cannot boot
    skip_erased: bool = True
    compare: bool = True  # look at what the chip holds first; write only if something differs
    interruptible: bool = False  # SIGINT/SIGTERM stop the flash between blocks (`notedfu flash`; not the agent)
    run: bool = True


def plan_flash(segments: list[Segment], chip: Chip, flash_size: int, options: FlashOptions) -> FlashPlan:
    """Check the image against the chip and work out the pages; raise before touching anything."""
    base = chip.flash_base
    check_image(segments, base, flash_size, options)

    pages = []
    for index, (address, size) in enumerate(chip.pages(flash_size)):
        touched = [s for s in segments if s.address < address + size and address < s.end]
        if not touched:
            continue
        for start, stop in options.preserve:
            if start < address + size and address < stop:
                raise TargetError(f"page 0x{address:08x} must be erased for the image but holds part of the "
                                  f"preserved region 0x{start:08x}-0x{stop:08x}", code="E_IMAGE_OVERLAPS_PRESERVED",
                                  permanent=True)
        content = bytearray(b"\xff" * size)
        first, last = size, 0
        for segment in touched:
            lo, hi = max(address, segment.address), min(address + size, segment.end)
            content[lo - address:hi - address] = segment.data[lo - segment.address:hi - segment.address]
            first, last = min(first, lo - address), max(last, hi - address)
        last += -last % 4
        pages.append(PagePlan(index, address, size, bytes(content), first - first % 4, min(last, size)))
    first_page = next((p for p in pages if p.address == base), None)
    return FlashPlan(pages, sum(len(s.data) for s in segments), first_page, max(8, chip.family.write_granule),
                     chip.family)


def check_image(segments: list[Segment], base: int, flash_size: int, options: FlashOptions) -> None:
    """The checks every way of flashing shares (the ROM bootloader and the external tools alike): the image
    fits the flash, starts at its base (unless allowed), stays out of the preserved regions, and can boot."""
    end = base + flash_size
    low, high = segments[0].address, max(s.end for s in segments)
    if low < base or high > end:
        raise TargetError(f"image spans 0x{low:08x}-0x{high:08x}, outside flash 0x{base:08x}-0x{end:08x} "
                          f"({flash_size // 1024} KiB)", code="E_IMAGE_TOO_LARGE", permanent=True)
    if low != base and not options.allow_offset:
        raise TargetError(f"image starts at 0x{low:08x}, not at the flash base 0x{base:08x} "
                          "(use --allow-offset for an application behind a bootloader)", code="E_IMAGE_NOT_AT_BASE",
                          permanent=True)
    for start, stop in options.preserve:
        if start < base or stop > end:
            raise UsageError(f"--preserve 0x{start:08x}:0x{stop:08x} is outside the flash 0x{base:08x}-0x{end:08x}",
                             code="E_USAGE")
    for start, stop in options.preserve:
        if any(s.address < stop and start < s.end for s in segments):
            raise TargetError(f"image overlaps the preserved region 0x{start:08x}-0x{stop:08x}",
                              code="E_IMAGE_OVERLAPS_PRESERVED", permanent=True)
    if options.check_vectors and low == base:
        _check_vector_table(segments[0], base, end)


def _check_vector_table(segment: Segment, base: int, end: int) -> None:
    if len(segment.data) < 8:
        raise TargetError("image too short to hold a vector table", code="E_IMAGE_NOT_BOOTABLE", permanent=True)
    stack, reset = struct.unpack_from("<II", segment.data)
    if not RAM_RANGE[0] <= stack <= RAM_RANGE[1] or stack % 4:
        raise TargetError(f"image's initial stack pointer 0x{stack:08x} is not in RAM: not an STM32 image "
                          "for this address (use --no-vector-check to flash it anyway)", code="E_IMAGE_NOT_BOOTABLE",
                          permanent=True)
    if not (reset & 1) or not base <= (reset & ~1) < end:
        raise TargetError(f"image's reset vector 0x{reset:08x} is not a Thumb address in flash "
                          "(use --no-vector-check to flash it anyway)", code="E_IMAGE_NOT_BOOTABLE", permanent=True)
