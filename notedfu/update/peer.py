"""Who is on the other end of the control socket, and whether they could read a file themselves.

The daemon usually runs with more rights than the shell that talks to it. A
client that names a file (``{"cmd": "install", "path": …}``) must not get the
daemon to read what it could not read itself (``/etc/shadow`` as root), so the
daemon checks the file against the peer's credentials (``SO_PEERCRED``: the
kernel's word, not the client's) before opening it.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Peer:
    """The credentials of the process that connected."""

    pid: int
    uid: int
    gid: int

    @classmethod
    def of(cls, sock: socket.socket) -> "Peer | None":
        """The peer of a connected Unix socket, or ``None`` where the platform cannot tell."""
        try:
            return cls(*_UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)))
        except (AttributeError, OSError):
            return None

    def groups(self) -> set[int]:
        """The peer's primary and supplementary groups (from ``/proc``; only the primary if it is gone)."""
        groups = {self.gid}
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("Groups:"):
                    groups.update(int(g) for g in line.split()[1:])
        except (OSError, ValueError):
            pass
        return groups

    def may_read(self, path: Path) -> bool:
        """Whether the peer could open ``path`` (already resolved) for reading: every directory on the way
        searchable and the file readable, by the classic owner/group/other bits (root may read anything)."""
        try:
            return (all(self._allowed(d.stat(), stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
                        for d in reversed(path.parents))
                    and self.may_read_file(path.stat()))
        except OSError:
            return False

    def may_read_file(self, st: os.stat_result) -> bool:
        """Whether the file's own bits let the peer read it (checked again on the descriptor opened)."""
        return self._allowed(st, stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)

    def _allowed(self, st: os.stat_result, owner: int, group: int, other: int) -> bool:
        if self.uid == 0:
            return True
        if st.st_uid == self.uid:
            return bool(st.st_mode & owner)
        if st.st_gid in self.groups():
            return bool(st.st_mode & group)
        return bool(st.st_mode & other)
