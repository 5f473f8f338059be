"""Files that a crash leaves whole: the old content or the new, never half of either (temp file, fsync,
rename, fsync of the directory). Every state, journal and output file of notedfu is written here."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(dest: Path, content: Path | bytes) -> None:
    """Replace ``dest`` with a file's copy or with bytes, so that readers see the old or the new file.

    The file gets the mode a plain ``open()`` would give it (the umask's), or keeps the mode of the file
    it replaces; it is fsynced before the rename and the directory after it.
    """
    dest = dest.resolve()
    try:
        mode = dest.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            if isinstance(content, bytes):
                stream.write(content)
            else:
                with open(content, "rb") as source:
                    shutil.copyfileobj(source, stream)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as indented JSON, atomically (see :func:`write_atomic`)."""
    write_atomic(Path(path), (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def fsync_dir(path: Path) -> None:
    """Make a rename or create in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or ``None`` if missing or unreadable (a torn file is ignored)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
