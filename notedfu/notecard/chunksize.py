"""Which ``dfu.get`` length a card takes, learned once and remembered per card.

Blues documents no maximum. Every current Blues example reads 4096 bytes; an
old tutorial's 8192 failed on real hosts with ``{"err":"transaction
incomplete"}`` (discuss.blues.com/t/109); the notecard-schema sample for
``dfu.get binary:true`` reads 8192. So a card starts at the size known to work
for it (else 4096) and, in binary mode only (where a bigger chunk saves whole
requests and no base64 inflation can overrun a host buffer), a larger size is
tried once: each size the card refuses costs exactly one request, is
remembered, and is never asked for again.

State: ``<state>/cards/<device uid>.json``, e.g.
``{"binary": {"good": 8192, "refused": 16384}, "base64": {"good": 4096}}``.
"""

from __future__ import annotations

import re
from pathlib import Path

from notedfu.files import read_json, write_json_atomic

DEFAULT_CHUNK = 4096  # what every current Blues DFU example reads
MIN_CHUNK = 256
MAX_PROBE = 65536  # no point asking for more in one request: the card reads its flash in far smaller pieces


def card_file_name(uid: str) -> str:
    """A file name for a card's device UID (``dev:864475044012345``), safe whatever the card says."""
    return (re.sub(r"[^A-Za-z0-9._-]", "_", uid)[:80] or "unknown") + ".json"


class ChunkSizes:
    """The sizes one card has taken and refused, per encoding (``binary`` or ``base64``)."""

    def __init__(self, root: Path | None, uid: str) -> None:
        """``root`` ``None``: sizes for this transfer only, nothing read or remembered."""
        self.path = Path(root) / "cards" / card_file_name(uid) if root is not None else None
        self.known = (read_json(self.path) or {}) if self.path else {}

    def _entry(self, encoding: str) -> dict[str, int]:
        entry = self.known.get(encoding)
        if not isinstance(entry, dict):
            entry = self.known[encoding] = {}
        return entry

    def _number(self, encoding: str, key: str) -> int | None:
        value = self._entry(encoding).get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= MIN_CHUNK else None

    def good(self, encoding: str, capacity: int | None = None) -> int:
        """The largest size this card is known to take (4096 if nothing is known)."""
        size = self._number(encoding, "good") or DEFAULT_CHUNK
        return max(MIN_CHUNK, min(size, capacity)) if capacity else size

    def probe(self, encoding: str, capacity: int | None = None) -> int | None:
        """A larger size worth one try, or ``None`` (base64, or the ceiling is known)."""
        if encoding != "binary":
            return None
        size = self.good(encoding, capacity) * 2
        refused = self._number(encoding, "refused")
        limit = min(x for x in (MAX_PROBE, capacity, (refused or 0) - 1 if refused else None) if x)
        return size if size <= limit else None

    def took(self, encoding: str, size: int) -> None:
        """The card served ``size``: remember it if it is the largest yet."""
        if size > (self._number(encoding, "good") or 0):
            self._entry(encoding)["good"] = size
            self._save()

    def refused(self, encoding: str, size: int) -> int:
        """The card refused ``size``: remember it; return the size to use now."""
        entry = self._entry(encoding)
        ceiling = self._number(encoding, "refused")
        entry["refused"] = min(size, ceiling) if ceiling else size
        good = self._number(encoding, "good")
        if good is None:
            good = DEFAULT_CHUNK if size > DEFAULT_CHUNK else max(MIN_CHUNK, size // 2)
        elif good >= size:  # a size it used to take: step down
            good = max(MIN_CHUNK, size // 2)
        entry["good"] = good
        self._save()
        return good

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.known)
