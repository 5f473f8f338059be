"""Firmware images: raw ``.bin``, Intel ``.hex`` (intelhex), ``.elf`` (pyelftools).

Every format becomes the same thing: a list of contiguous :class:`Segment`\\ s
with absolute addresses, checked for overlaps. Bad files get a clear error
with code ``E_IMAGE_FILE``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from notedfu.errors import UsageError


class ImageFileError(UsageError):
    """The image file cannot be used."""

    code = "E_IMAGE_FILE"


@dataclass(frozen=True)
class Segment:
    """Bytes that go at ``address``."""

    address: int
    data: bytes

    @property
    def end(self) -> int:
        """One past the last address."""
        return self.address + len(self.data)


def load_image(path: str | Path, address: int | None = None) -> list[Segment]:
    """Read an image; ``address`` places a raw binary (required for ``.bin``)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImageFileError(f"cannot read image {path}: {exc.strerror}") from exc
    if not raw:
        raise ImageFileError(f"image {path} is empty")
    suffix = path.suffix.lower()
    if raw.startswith(b"\x7fELF"):
        segments = _load_elf(path)
    elif suffix in (".hex", ".ihex", ".ihx"):
        segments = _load_hex(path)
    else:
        if address is None:
            raise ImageFileError("a raw binary needs a load address")
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


def firmware_info(image: bytes) -> dict:
    """The ``firmware::info:{…}`` JSON embedded in an image, as Notehub reads it."""
    marker = image.find(b"firmware::info:")
    if marker < 0:
        return {}
    start = marker + len(b"firmware::info:")
    end = image.find(b"}", start)
    try:
        return json.loads(image[start:end + 1])
    except ValueError:
        return {}
