"""Whether flash pages hold what a plan says: Get Checksum (0xA1) over runs of pages, or read-back."""

from __future__ import annotations

from typing import Callable

from notedfu.errors import TargetError
from notedfu.protocol.an3155 import MAX_BLOCK, stm32_crc
from notedfu.target.an3155 import Bootloader
from notedfu.target.plan import PagePlan

GLANCE = 8  # bytes of a page read first when comparing without a CRC command (see starts_as_planned)


class PageCheck:
    """Checks pages on a synced bootloader by ``method`` (``crc``, ``read`` or ``none``); a lost or refused
    answer goes to ``recover`` (which resyncs or raises) and counts as a page that does not match."""

    def __init__(self, bootloader: Bootloader, method: str, recover: Callable[[TargetError], None]) -> None:
        self.bl = bootloader
        self.method = method
        self.recover = recover

    def starts_as_planned(self, page: PagePlan) -> bool:
        """A first look before reading a page back: its first bytes. An erased or different chip shows it in
        them almost always, for ~20 bytes on the wire instead of a page (0.25 s instead of 3 s for 128 KiB
        on an empty F1); a page that passes is read back whole."""
        start = page.verify_from
        count = min(GLANCE, page.verify_to - start)
        try:
            return self.bl.read_memory(page.address + start, count) == page.content[start:start + count]
        except TargetError as exc:
            self.recover(exc)
            return False

    def bad_pages(self, pages: list[PagePlan]) -> list[PagePlan]:
        """The pages that do not hold what they should.

        With the CRC command, one checksum covers each run of adjacent pages;
        only a run that fails is split, down to single pages.
        """
        if not pages or self.method == "none":
            return []
        if self.method == "read":
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
                bad += self.bad_pages(run[:half]) + self.bad_pages(run[half:])
        return bad

    def _crc_ok(self, run: list[PagePlan]) -> bool:
        first, last = run[0], run[-1]
        expected = b"".join(p.content for p in run)[first.verify_from:sum(p.size for p in run[:-1]) + last.verify_to]
        try:
            return self.bl.checksum(first.address + first.verify_from, len(expected)) == stm32_crc(expected)
        except TargetError as exc:
            self.recover(exc)
            return False

    def _read_back_ok(self, page: PagePlan) -> bool:
        """Whether the page holds its content, read back a block at a time; the first block that differs
        ends the read (comparing with an erased or older chip then costs one block a page, not the page)."""
        start, stop = page.verify_from, page.verify_to
        try:
            for offset in range(start, stop, MAX_BLOCK):
                end = min(offset + MAX_BLOCK, stop)
                if self.bl.read_memory(page.address + offset, end - offset) != page.content[offset:end]:
                    return False
        except TargetError as exc:
            self.recover(exc)
            return False
        return True
