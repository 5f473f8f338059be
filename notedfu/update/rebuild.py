"""The image an update file (``.ndfu``) stands for, rebuilt and staged before the flash stage begins.

A delta needs its base image. The agent keeps the image the chip runs staged
(it is the last-known-good), so the base is usually on disk; otherwise the
chip is read back (only with BOOT0/NRST wired: reading stops the running
firmware, and the lines start it again). Whatever the chip holds, a base that
is found and matches the header's MD5 rebuilds the exact new image, and the
flash writes only the pages that differ. No base at all is permanent:
``E_DELTA_BASE``, reported to Notehub once, nothing flashed.
"""

from __future__ import annotations

from typing import Callable

from notedfu.checksums import md5_hex
from notedfu.events import Events
from notedfu.notecard.staging import Staging
from notedfu.protocol.ndfu import DeltaBaseError, Header, is_update_file, unpack
from notedfu.update.job import Job
from notedfu.update.signature import verified_payload


class Rebuilder:
    """Turns a staged update file into the staged image it describes."""

    def __init__(self, staging: Staging, events: Events, read_chip: Callable[[], bytes | None]) -> None:
        self.staging = staging
        self.events = events
        self.read_chip = read_chip  # the chip's image read back, or None where it cannot be read

    def rebuild(self, job: Job, data: bytes) -> None:
        """If ``data`` (the verified download, signature removed) is an update file: rebuild its image, check
        it against the header, stage it and record it in ``job.built``; a plain image is left as it is."""
        if not is_update_file(data):
            job.built = {}
            return
        header, image = unpack(data, self._base)
        self.staging.stage_bytes(image, source="NDFU")
        kind = f"a delta against {header.base_md5}" if header.is_delta else f"a {header.encoding.name.lower()} image"
        job.built = {"md5": header.md5, "length": header.length, "encoding": header.encoding.name.lower(),
                     "base_md5": header.base_md5, "package_length": len(data)}
        self.events.message(f"update file ({len(data)} bytes, {kind}) rebuilt into image {header.md5} "
                            f"({header.length} bytes); length, CRC-32, MD5, SHA-256 and version match its header")

    def _base(self, header: Header) -> bytes:
        path = self.staging.paths(header.base_md5)[2]
        if path.exists():
            kept = verified_payload(path.read_bytes(), None)
            if md5_hex(kept) == header.base_md5:
                self.events.message(f"delta base {header.base_md5}: the image the agent kept")
                return kept
        self.events.message(f"delta base {header.base_md5} is not kept here: reading the chip")
        held = self.read_chip()
        if held is None:
            raise DeltaBaseError(f"the update file is a delta against image {header.base_md5} "
                                 f"({header.base_length} bytes): the agent does not keep it and the chip cannot "
                                 "be read (no BOOT0/NRST lines, a tool that cannot read, or readout protection)")
        # The chip's read-back ends where its flash is erased: the base may end in 0xFF bytes too.
        chip_base = held[:header.base_length].ljust(header.base_length, b"\xff")
        if md5_hex(chip_base) != header.base_md5:
            raise DeltaBaseError(f"the update file is a delta against image {header.base_md5} "
                                 f"({header.base_length} bytes); the chip holds {md5_hex(held)} "
                                 f"({len(held)} bytes) and the agent keeps no copy of the base")
        return chip_base
