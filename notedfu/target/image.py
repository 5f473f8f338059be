"""Firmware images: raw ``.bin``, Intel ``.hex`` (intelhex), ``.elf`` (pyelftools).

Every format becomes the same thing: a list of contiguous :class:`Segment`\\ s
with absolute addresses, checked for overlaps. Bad files get a clear error
with code ``E_IMAGE_FILE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from notedfu.errors import ImageFileError


@dataclass(frozen=True)
class Segment:
    """Bytes that go at ``address``."""

    address: int
    data: bytes

    @property
    def end(self) -> int:
        """One past the last address."""
        return self.address + len(self.data)


MAX_BINARY = 16 * 1024 * 1024  # no STM32 has more flash than this: a bigger .bin is not an image
MAX_CONTAINER = 64 * 1024 * 1024  # .hex and .elf carry more than their data (text, symbols), within reason
HEX_SUFFIXES = (".hex", ".ihex", ".ihx")


def read_limited(path: str | Path, limit: int) -> bytes:
    """A file's bytes, refused before reading if it is larger than ``limit`` (no 3 GB read for nothing)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise ImageFileError(f"{path} is a directory, not an image file")
        if size > limit:
            raise ImageFileError(f"{path} has {size:,} bytes: more than any image notedfu handles "
                                 f"({limit:,}); wrong file?")
        return path.read_bytes()
    except OSError as exc:
        raise ImageFileError(f"cannot read image {path}: {exc.strerror}") from exc


def load_image(path: str | Path, address: int | None = None, *, address_given: bool = False) -> list[Segment]:
    """Read an image; ``address`` places a raw binary (required for ``.bin``); ``address_given`` says the
    user chose it, which only a raw binary can use (.hex and .elf carry their own addresses)."""
    path = Path(path)
    suffix = path.suffix.lower()
    container = suffix in HEX_SUFFIXES or suffix == ".elf"
    raw = read_limited(path, MAX_CONTAINER if container else MAX_BINARY)
    if not raw:
        raise ImageFileError(f"image {path} is empty")
    is_elf = raw.startswith(b"\x7fELF")
    if suffix == ".elf" and not is_elf:
        raise ImageFileError(f"{path} is named .elf but is not an ELF file (no \\x7fELF header); a raw binary "
                             "should be named .bin")
    if address_given and (is_elf or suffix in HEX_SUFFIXES):
        raise ImageFileError(f"--address applies to raw .bin images only: {path} carries its own load addresses")
    if is_elf:
        segments = _load_elf(path)
    elif suffix in HEX_SUFFIXES:
        segments = _load_hex(path)
    else:
        if address is None:
            raise ImageFileError("a raw binary needs a load address")
        if len(raw) > MAX_BINARY:
            raise ImageFileError(f"{path} is larger than any STM32 flash")
        segments = [Segment(address, raw)]
    segments = sorted((s for s in segments if s.data), key=lambda s: s.address)
    if not segments:
        raise ImageFileError(f"image {path} has no loadable data")
    for before, after in zip(segments, segments[1:]):
        if after.address < before.end:
            raise ImageFileError(f"image {path} has overlapping data at 0x{after.address:08x}")
    return segments


def _load_hex(path: Path) -> list[Segment]:
    from intelhex import IntelHex, IntelHexError

    try:
        ihex = IntelHex(str(path))
    except (IntelHexError, ValueError) as exc:
        raise ImageFileError(f"{path} is not a valid Intel HEX file: {exc}") from exc
    return [Segment(start, ihex.tobinstr(start=start, end=end - 1)) for start, end in ihex.segments()]


def _load_elf(path: Path) -> list[Segment]:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            segments = []
            for segment in elf.iter_segments():
                if segment["p_type"] == "PT_LOAD" and segment["p_filesz"] > 0:
                    # Flash holds the load image at the physical address (LMA), e.g. .data's initial values.
                    segments.append(Segment(segment["p_paddr"], segment.data()[:segment["p_filesz"]]))
            return segments
    except (ELFError, OSError) as exc:
        raise ImageFileError(f"{path} is not a usable ELF file: {exc}") from exc
