"""Flashing an STM32 through its ROM bootloader: the plan, then its execution.

The plan is pure: which pages the image covers, what each must hold, which
256-byte blocks are all 0xFF (nothing to write after an erase). Execution:

0. compare every covered page with what the chip holds (CRC command 0xA1
   over runs of pages when the bootloader has it, read-back otherwise): the
   chip, not a record, says what must change; if nothing differs, nothing is
   erased or written;
1. erase the first page (the vector table) before anything else — whenever
   anything changes, even if that page itself does not — so from this moment
   until the very end no half-old, half-new image can boot;
2. erase the other pages that differ — only those;
3. write and verify every other page (CRC or read-back); a page that fails is
   erased and rewritten (never rewritten unerased: flash bits only go 1→0),
   a bounded number of times;
4. write the first page last, and within it the initial stack pointer and
   reset vector (its first 8 bytes, or the flash's write granule) as the very
   last write of the whole flash; verify it; then run the application.

An interrupted flash therefore leaves either the verified new image or a
chip whose vector table is erased — which does not boot, and on most parts
drops back into the bootloader for the next attempt.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable

from notedfu import stopping
from notedfu.events import Events
from notedfu.errors import RESYNCABLE, TargetError, TargetProtocolError, UsageError
from notedfu.protocol.an3155 import MAX_BLOCK, BootloaderInfo, Cmd, stm32_crc
from notedfu.target.an3155 import Bootloader
from notedfu.protocol.chips import Chip, Family
from notedfu.target.image import Segment

ERASE_BATCH = 32  # pages per erase command (some bootloaders cap the count; see the STM32 notes)
PROGRESS_PAGES = 16  # pages compared or verified between progress events
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


@dataclass
class FlashReport:
    """What flashing did."""

    pages_erased: int = 0
    blocks_written: int = 0
    bytes_written: int = 0
    blocks_skipped: int = 0
    verify_method: str = ""
    repaired_pages: int = 0
    pages_unchanged: int = 0  # covered pages the chip already held (compared before erasing): skipped
    pages_written: int = 0  # pages erased and written (the first page included when anything differed)
    pages_verified: int = 0  # written pages read back or CRC-checked afterwards
    unchanged: bool = False  # the chip held the whole image: nothing was erased or written
    started: bool = False
    tool_output: str = ""  # what an external tool printed (its last 2000 characters)


class Flasher:
    """Runs a :class:`FlashPlan` on a synced bootloader."""

    def __init__(self, bootloader: Bootloader, info: BootloaderInfo, plan: FlashPlan, options: FlashOptions,
                 events: Events | None = None, resync: Callable[[], None] | None = None) -> None:
        self.bl = bootloader
        self.info = info
        self.plan = plan
        self.options = options
        self.events = events or Events(source="LOCAL")
        self.resync = resync or bootloader.sync
        self.extended = info.supports(Cmd.EXTENDED_ERASE)
        if not self.extended and not info.supports(Cmd.ERASE):
            raise TargetProtocolError("the bootloader offers no erase command")
        crc = info.supports(Cmd.GET_CHECKSUM)
        method = {"auto": "crc" if crc else "read", "crc": "crc", "read": "read", "none": "none"}[options.verify]
        if method == "crc" and not crc:
            raise TargetError("--verify crc: this bootloader has no Get Checksum (0xA1) command",
                              code="E_TARGET_NO_CRC")
        self.report = FlashReport(verify_method=method)
        self._done = 0

    def run(self) -> FlashReport:
        """Compare, then erase, write and verify what differs; the first page last."""
        plan = self.plan
        pages = self._differing(plan.pages)
        if not pages:
            self.report.unchanged = True
            self.events.step("flash", "the chip already holds this image: nothing to write", phase="compare",
                             state="done", pages=len(plan.pages), pages_written=0, pages_unchanged=len(plan.pages),
                             pages_verified=0)
            return self.report
        later = [p for p in pages if p is not plan.first]
        first = plan.first if plan.first in pages else None
        self.report.pages_written = len(pages)
        total = sum(len(b) for page in pages for _, b in page.blocks())
        self.events.step("flash", "erasing", phase="erase", pages=0, pages_total=len(pages))
        if first:
            self._erase([first])  # from here on, nothing half-written can boot
            if not self._is_erased(first):
                raise TargetError(f"the first page 0x{first.address:08x} did not erase (write-protected?): "
                                  "stopped before changing anything else; the old image is intact",
                                  code="E_TARGET_PROTECTED")
        for start in range(0, len(later), ERASE_BATCH):
            self._erase(later[start:start + ERASE_BATCH])
            self.events.step("flash", "erasing", phase="erase", pages=min(len(pages), start + ERASE_BATCH + 1),
                             pages_total=len(pages))
        failed = []
        for page in later:
            try:
                self._write_page(page, total)
            except TargetError as exc:
                self._recover(exc)
                failed.append(page)
        bad = self._checked_pages([p for p in later if p not in failed], "verify", "verifying", len(later))
        for page in failed + bad:
            self._repair(page, total, "write failed" if page in failed else "verification failed")
        if first:
            try:
                self._write_page(first, total)
                good = not self._bad_pages([first])
                problem = "verification failed"
            except TargetError as exc:
                self._recover(exc)
                good, problem = False, exc.message
            if not good:
                self._repair(first, total, problem)
        if self.report.verify_method != "none":
            self.report.pages_verified = len(pages)
        self.events.step("flash", "written and verified", phase="write", done=total, total=total, state="done",
                         pages=len(pages), pages_written=len(pages), pages_unchanged=self.report.pages_unchanged,
                         pages_verified=self.report.pages_verified)
        return self.report

    def differing(self) -> list[PagePlan]:
        """The covered pages the chip does not hold as planned (nothing is written)."""
        return self._bad_pages(self.plan.pages)

    def _differing(self, pages: list[PagePlan]) -> list[PagePlan]:
        """The pages to flash: those the chip does not hold already, plus the first page if any differ."""
        if not self.options.compare or self.report.verify_method == "none":
            return list(pages)
        differing = self._checked_pages(pages, "compare", "comparing with what the chip holds", len(pages))
        if differing and self.plan.first is not None and self.plan.first not in differing:
            differing.append(self.plan.first)  # erased first, so no half-new image can boot meanwhile
        self.report.pages_unchanged = len(pages) - len(differing)  # skipped: the pages not written
        return [p for p in pages if p in differing]

    def _checked_pages(self, pages: list[PagePlan], phase: str, name: str, total: int) -> list[PagePlan]:
        """``_bad_pages`` a batch at a time, saying how far it got (a read-back of a big image takes seconds)."""
        self.events.step("flash", name, phase=phase, pages=0, pages_total=total)
        bad = []
        for start in range(0, len(pages), PROGRESS_PAGES):
            batch = pages[start:start + PROGRESS_PAGES]
            bad += self._bad_pages(batch)
            self.events.step("flash", name, phase=phase, pages=start + len(batch), pages_total=total)
        return bad

    def _is_erased(self, page: PagePlan) -> bool:
        """Whether the page really erased: by CRC when offered, else its vector table (what decides booting)."""
        if self.report.verify_method == "crc":
            return not self._bad_pages([PagePlan(page.index, page.address, page.size, b"\xff" * page.size, 0,
                                                 page.size)])
        return self.bl.read_memory(page.address, 8) == b"\xff" * 8

    def _recover(self, exc: TargetError) -> None:
        """After a NACK or a lost answer: get back in step with the bootloader."""
        if not isinstance(exc, RESYNCABLE):
            raise exc
        self.resync()

    def _repair(self, page: PagePlan, total: int, problem: str) -> None:
        """Erase and rewrite one page until it verifies (flash bits only go 1→0: never rewrite unerased)."""
        for attempt in range(1, self.options.retries + 1):
            self.report.repaired_pages += 1
            self.events.message(f"page 0x{page.address:08x}: {problem}; erasing and rewriting it "
                                f"(repair {attempt} of {self.options.retries})", "warning")
            try:
                self._erase([page])
                self._write_page(page, total)
                if not self._bad_pages([page]):
                    return
                problem = "verification failed"
            except TargetError as exc:
                self._recover(exc)
                problem = exc.message
        raise TargetError(f"page 0x{page.address:08x} still wrong after {self.options.retries} rewrites: the "
                          "first page stays erased, so the chip will not boot a partial image",
                          code="E_TARGET_VERIFY")

    def _bad_pages(self, pages: list[PagePlan]) -> list[PagePlan]:
        """The pages that do not hold what they should.

        With the CRC command, one checksum covers each run of adjacent pages;
        only a run that fails is split, down to single pages.
        """
        if not pages or self.report.verify_method == "none":
            return []
        if self.report.verify_method == "read":
            return [p for p in pages if not self._read_back_ok(p)]
        runs: list[list[PagePlan]] = []
        for page in pages:
            if runs and runs[-1][-1].address + runs[-1][-1].size == page.address \
                    and runs[-1][-1].verify_to == runs[-1][-1].size and page.verify_from == 0:
                runs[-1].append(page)
            else:
                runs.append([page])
        bad = []
        for run in runs:
            if self._crc_ok(run):
                continue
            if len(run) == 1:
                bad.append(run[0])
            else:
                half = len(run) // 2
                bad += self._bad_pages(run[:half]) + self._bad_pages(run[half:])
        return bad

    def _crc_ok(self, run: list[PagePlan]) -> bool:
        first, last = run[0], run[-1]
        expected = b"".join(p.content for p in run)[first.verify_from:sum(p.size for p in run[:-1]) + last.verify_to]
        try:
            return self.bl.checksum(first.address + first.verify_from, len(expected)) == stm32_crc(expected)
        except TargetError as exc:
            self._recover(exc)
            return False

    def _read_back_ok(self, page: PagePlan) -> bool:
        start, stop = page.verify_from, page.verify_to
        got = bytearray()
        try:
            for offset in range(start, stop, MAX_BLOCK):
                got += self.bl.read_memory(page.address + offset, min(MAX_BLOCK, stop - offset))
        except TargetError as exc:
            self._recover(exc)
            return False
        return bytes(got) == page.content[start:stop]

    def _erase(self, pages: list[PagePlan]) -> None:
        family = self.plan.family
        self.bl.erase([p.index for p in pages], self.extended,
                      sum(family.erase_seconds(p.size) for p in pages) if family else 0.0)
        self.report.pages_erased += len(pages)

    def _write_page(self, page: PagePlan, total: int) -> None:
        blocks = page.blocks(self.options.skip_erased)
        self.report.blocks_skipped += len(page.blocks(False)) - len(blocks)
        head = self.plan.vector_bytes
        if page is self.plan.first and blocks and blocks[0][0] == page.address:
            # The stack pointer and reset vector go last: until they are written the chip cannot boot
            # what is in flash, whatever moment the host or the power dies.
            address, data = blocks[0]
            rest = [(address + head, data[head:])] if len(data) > head else []
            blocks = rest + blocks[1:] + [(address, data[:head])]
        for address, data in blocks:
            if self.options.interruptible:
                stopping.check()
            self.bl.write_memory(address, data)
            self.report.blocks_written += 1
            self.report.bytes_written += len(data)
            self._done += len(data)
        self.events.step("flash", "writing", phase="write", done=min(self._done, total), total=total)
