"""Flashing an STM32 through its ROM bootloader: the execution of a plan.

The plan (:mod:`notedfu.target.plan`) is pure: which pages the image covers,
what each must hold, which 256-byte blocks are all 0xFF (nothing to write
after an erase). Pages are checked by :mod:`notedfu.target.page_check`.
Execution:

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

from dataclasses import dataclass
from typing import Callable

from notedfu import stopping
from notedfu.events import Events
from notedfu.errors import RESYNCABLE, TargetError, TargetProtocolError
from notedfu.protocol.an3155 import BootloaderInfo, Cmd
from notedfu.target.an3155 import Bootloader
from notedfu.target.page_check import PageCheck
from notedfu.target.plan import FlashOptions, FlashPlan, PagePlan

ERASE_BATCH = 32  # pages per erase command (some bootloaders cap the count; see the STM32 notes)
PROGRESS_PAGES = 16  # pages compared or verified between progress events
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
        self.check = PageCheck(bootloader, method, self._recover)
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
                good = not self.check.bad_pages([first])
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
        return self.check.bad_pages(self.plan.pages)

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
            looked_at = batch
            if phase == "compare" and self.report.verify_method == "read":
                glanced = [p for p in batch if not self.check.starts_as_planned(p)]
                bad += glanced
                looked_at = [p for p in batch if p not in glanced]
            bad += self.check.bad_pages(looked_at)
            self.events.step("flash", name, phase=phase, pages=start + len(batch), pages_total=total)
        return bad

    def _is_erased(self, page: PagePlan) -> bool:
        """Whether the page really erased: by CRC when offered, else its vector table (what decides booting)."""
        if self.report.verify_method == "crc":
            return not self.check.bad_pages([PagePlan(page.index, page.address, page.size, b"\xff" * page.size, 0,
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
                if not self.check.bad_pages([page]):
                    return
                problem = "verification failed"
            except TargetError as exc:
                self._recover(exc)
                problem = exc.message
        raise TargetError(f"page 0x{page.address:08x} still wrong after {self.options.retries} rewrites: the "
                          "first page stays erased, so the chip will not boot a partial image",
                          code="E_TARGET_VERIFY")

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
