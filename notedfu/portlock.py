"""One lock per device port, shared by every process on the host, naming its holder.

A Notecard or a target must hear from one program at a time: two programs
writing requests to one port read each other's answers. note-python's
answer, one ``/tmp/serial.lock`` for the whole machine, serialises unrelated
cards and is not shared at all between a shell and a service with
``PrivateTmp=yes``. Here each port has its own lock file in ``/run/lock``
(``$NOTEDFU_LOCK_DIR`` overrides it), the directory Debian keeps for exactly
this, which systemd sandboxes leave shared. A port is known by what it
resolves to, so ``/dev/serial0`` and ``/dev/ttyAMA0`` share a lock.

The lock is an ``flock`` (released by the kernel when the holder dies, so no
stale locks) on a file that, while held, says who holds it. filelock is not
used here because its lock file cannot carry that: a contender must read the
holder's pid and command line from the very file the holder locked.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import tempfile
import urllib.parse
from pathlib import Path

from notedfu.errors import PortBusy, UsageError

ENV_LOCK_DIR = "NOTEDFU_LOCK_DIR"


def lock_dir() -> Path:
    """``$NOTEDFU_LOCK_DIR``, else ``/run/lock`` when writable, else the temporary directory."""
    if env := os.environ.get(ENV_LOCK_DIR):
        return Path(env)
    run_lock = Path("/run/lock")
    if run_lock.is_dir() and os.access(run_lock, os.W_OK):
        return run_lock
    return Path(tempfile.gettempdir())


def port_key(target: str) -> str | None:
    """A file-name-safe key for a port, or ``None`` for one no other process can reach.

    Device paths resolve through symlinks (``/dev/serial0`` → ``ttyAMA0``,
    ``/dev/serial/by-id/…`` → ``ttyACM0``); a named simulator
    (``sim://notecard?name=bench``) is one card per process only, so unnamed
    and named simulators alike need no lock across processes.
    """
    if "://" in target:
        parts = urllib.parse.urlsplit(target)
        if parts.scheme.lower() == "sim":
            return None
        raw = f"{parts.scheme}-{parts.netloc}{parts.path}"
    else:
        raw = os.path.realpath(target).removeprefix("/dev/").replace("/", "-")
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)[:100] or None


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "another process"


def _command_line() -> str:
    try:
        args = Path("/proc/self/cmdline").read_bytes().split(b"\0")
        return " ".join(a.decode("utf-8", "replace") for a in args if a)[:300]
    except OSError:
        return ""


class PortLock:
    """Exclusive use of one port: :meth:`acquire` at once or :class:`PortBusy`."""

    def __init__(self, target: str, what: str = "port") -> None:
        self.target = target
        self.what = what
        key = port_key(target)
        self.path = lock_dir() / f"notedfu-{key}.lock" if key else None
        self._fd: int | None = None

    def _open(self) -> int:
        assert self.path is not None
        for _ in range(3):
            try:
                return os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                pass
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            except FileExistsError:
                continue  # another process created it first: open theirs
            os.fchmod(fd, 0o666)  # shells and the service user lock the same file
            return fd
        raise OSError(errno.EAGAIN, "lock file keeps disappearing")

    def acquire(self) -> "PortLock":
        """Take the port or raise :class:`PortBusy` naming the holder."""
        if self.path is None or self._fd is not None:
            return self
        try:
            fd = self._open()
        except OSError as exc:
            raise UsageError(f"cannot lock {self.what} {self.target}: {self.path}: {exc.strerror} (set "
                             "NOTEDFU_LOCK_DIR to a directory every notedfu on this host can write)",
                             code="E_LOCK") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise PortBusy(f"{self.what} {self.target} is in use by pid {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} ({_command_line()})\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let the port go (the kernel does the same if this process dies)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)

    def __enter__(self) -> "PortLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
