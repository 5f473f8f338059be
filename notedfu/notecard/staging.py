"""Staging on disk: the image being fetched, its journal, and the card's saved mode.

Layout under the state directory::

    agent.lock             held while an agent works (status may repair only if free)
    card-mode.json         the hub mode to hand back, written before ``hub.set dfu``
    staging/<md5>.part     the image as far as it is verified
    staging/<md5>.json     the journal: image metadata + verified length
    staging/<md5>.bin      a complete, verified image

Files are named by the image's MD5 (validated hex), never by anything else the
card says, so a hostile ``name`` or ``source`` cannot place a file anywhere.
Every journal update is atomic (write, fsync, rename, fsync the directory): a
power cut leaves either the old or the new journal, and the journal never
claims more than the ``.part`` file holds, because the data is fsynced first.
"""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from filelock import FileLock, Timeout

from notedfu.checksums import crc32, is_md5, md5_hex
from notedfu.errors import Busy, StagingError, UsageError
from notedfu.files import fsync_dir, read_json, write_json_atomic

ENV_STATE_DIR = "NOTEDFU_STATE_DIR"


def default_state_dir() -> Path:
    """``$NOTEDFU_STATE_DIR``, else ``/var/lib/notedfu`` if writable, else the user's state dir."""
    if env := os.environ.get(ENV_STATE_DIR):
        return Path(env)
    system = Path("/var/lib/notedfu")
    if os.access(system if system.exists() else system.parent, os.W_OK):
        return system
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "notedfu"


IMAGE_MODE = 0o600
"""Staged images are the service's own: an image a client asked for stays readable by its owner only."""


@contextmanager
def disk(what: str, directory: Path, needed: int = 0) -> Iterator[None]:
    """Turn a full disk (or quota, or file-size limit) while ``what`` into :class:`StagingError`."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        try:
            free = f"{shutil.disk_usage(directory).free:,} bytes free"
        except OSError:
            free = "free space unknown"
        need = f", {needed:,} needed" if needed else ""
        raise StagingError(f"{what}: {directory} is full ({exc.strerror}; {free}{need}): make room and run "
                           "again — what is verified so far is kept") from exc


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """``pwrite`` until every byte is down: a write that meets a file size limit or a full disk comes back
    short first (the next one raises), and the journal must never claim bytes that are not on disk."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view, offset = view[written:], offset + written


def quarantine(path: Path, why: str, warn: Callable[[str], None] | None) -> None:
    """Move a state file that cannot be trusted aside (``.bad``), keeping it for a human, and say so."""
    target = path.with_name(f"{path.name}.bad")
    try:
        os.replace(path, target)
    except OSError:
        path.unlink(missing_ok=True)
    if warn:
        warn(f"{path} {why}: moved aside to {target.name}; starting from what can be trusted")


def _valid_journal(data: dict[str, Any]) -> bool:
    ints = ("length", "crc32", "verified", "rereads")
    return (is_md5(data.get("md5"))
            and all(isinstance(data.get(k, 0), int) and not isinstance(data.get(k, 0), bool) for k in ints)
            and data.get("length", 0) > 0 and data.get("verified", 0) >= 0
            and isinstance(data.get("complete", False), bool)
            and all(isinstance(data.get(k, ""), str) for k in ("source", "version")))


@dataclass
class Journal:
    """What is known about one image being staged."""

    md5: str
    length: int
    crc32: int
    verified: int = 0  # bytes of .part proven good, always a chunk boundary
    source: str = ""  # for display only, never used as a path
    version: str = ""
    complete: bool = False
    rereads: int = 0  # whole re-reads from the card after the image failed verification


class Staging:
    """The state directory of one agent."""

    def __init__(self, root: Path, warn: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.warn = warn
        self.dir = self.root / "staging"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot use state directory {self.root}: {exc.strerror or exc} (check the path and "
                             "its permissions, or give another with --state-dir)", code="E_STATE_DIR") from exc
        self.lock = FileLock(str(self.root / "agent.lock"))

    @contextmanager
    def claimed(self) -> Iterator[None]:
        """Hold the state directory for this process (re-entrant), or raise :class:`Busy` at once naming it."""
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise Busy(f"another notedfu is using {self.root}") from None
        try:
            yield
        finally:
            self.lock.release()

    # -------------------------------------------------------- card mode
    @property
    def _card_mode_path(self) -> Path:
        return self.root / "card-mode.json"

    def saved_card_mode(self) -> str | None:
        """The mode to hand the card back in, if an agent took it into DFU mode."""
        data = read_json(self._card_mode_path)
        mode = data.get("mode") if data else None
        return mode if isinstance(mode, str) and mode and mode != "dfu" else None

    def save_card_mode(self, mode: str) -> None:
        """Remember the card's mode, durably, before changing it."""
        self._write_json(self._card_mode_path, {"mode": mode})

    def clear_card_mode(self) -> None:
        """The card is back in its mode: forget it."""
        self._card_mode_path.unlink(missing_ok=True)
        fsync_dir(self.root)

    # -------------------------------------------------------- images
    def paths(self, md5: str) -> tuple[Path, Path, Path]:
        """(.part, .json, .bin) for an image; ``md5`` must be validated hex."""
        if not is_md5(md5):
            raise ValueError(f"not an md5: {md5!r}")
        return self.dir / f"{md5}.part", self.dir / f"{md5}.json", self.dir / f"{md5}.bin"

    def journal(self, md5: str, length: int, crc32: int, **extra: Any) -> Journal:
        """The journal for this image: resumed if it matches, else a fresh one."""
        part, path, final = self.paths(md5)
        data = read_json(path)
        old = None
        if data is None and path.exists():
            quarantine(path, "is not a journal (torn or garbage)", self.warn)
        elif data is not None and not _valid_journal(data):
            quarantine(path, "has fields of the wrong type", self.warn)
        elif data is not None:
            old = Journal(**{k: data[k] for k in Journal.__dataclass_fields__ if k in data})
        if old is not None:
            if old.length == length and old.crc32 == crc32:
                have = final.stat().st_size if old.complete and final.exists() else \
                    part.stat().st_size if part.exists() else -1
                if old.complete and have == length:
                    return old
                if not old.complete and 0 <= old.verified <= min(have, length):
                    return old
        journal = Journal(md5=md5, length=length, crc32=crc32, **extra)
        part.unlink(missing_ok=True)
        self.save(journal)
        return journal

    def _write_json(self, path: Path, data: dict[str, Any]) -> None:
        with disk(f"writing {path.name}", path.parent):
            write_json_atomic(path, data)

    def save(self, journal: Journal) -> None:
        """Write the journal durably."""
        self._write_json(self.paths(journal.md5)[1], asdict(journal))

    def open_part(self, journal: Journal) -> int:
        """A file descriptor on the ``.part`` file, for ``write_chunk``."""
        return os.open(self.paths(journal.md5)[0], os.O_RDWR | os.O_CREAT, IMAGE_MODE)

    def write_chunk(self, fd: int, journal: Journal, offset: int, data: bytes) -> None:
        """Put a verified chunk on disk, then move the journal past it."""
        with disk("staging a chunk", self.dir, journal.length - offset):
            _pwrite_all(fd, data, offset)
            os.fsync(fd)
        journal.verified = offset + len(data)
        self.save(journal)

    def complete(self, journal: Journal) -> Path:
        """The ``.part`` is whole and verified: make it the staged ``.bin``."""
        part, _, final = self.paths(journal.md5)
        with open(part, "r+b") as stream:
            stream.truncate(journal.length)
            os.fsync(stream.fileno())
        os.replace(part, final)
        journal.complete = True
        journal.verified = journal.length
        self.save(journal)
        return final

    def stage_bytes(self, data: bytes, source: str = "") -> Journal:
        """Stage a whole image that came from elsewhere (a local file, the control socket)."""
        md5 = md5_hex(data)
        part, _, final = self.paths(md5)
        with disk("staging an image", self.dir, len(data)), \
                os.fdopen(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, IMAGE_MODE), "wb") as stream:
            os.fchmod(stream.fileno(), IMAGE_MODE)  # a .part left by an older run may have had another mode
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(part, final)
        fsync_dir(self.dir)
        journal = Journal(md5=md5, length=len(data), crc32=crc32(data), verified=len(data), source=source,
                          complete=True)
        self.save(journal)
        return journal

    def discard(self, md5: str) -> None:
        """Forget an image (it failed whole-image verification)."""
        for path in self.paths(md5):
            path.unlink(missing_ok=True)

    def prune(self, keep: set[str]) -> None:
        """Drop every staged image but ``keep`` (the image the chip runs is the next last-known-good)."""
        for path in self.dir.iterdir():
            md5 = path.name.split(".")[0]
            if is_md5(md5) and md5 not in keep and path.suffix in (".part", ".json", ".bin"):
                path.unlink(missing_ok=True)

    def journals(self) -> list[Journal]:
        """Every journal in the staging directory."""
        found = []
        for path in sorted(self.dir.glob("*.json")):
            data = read_json(path)
            if data and _valid_journal(data):
                found.append(Journal(**{k: data[k] for k in Journal.__dataclass_fields__ if k in data}))
        return found
