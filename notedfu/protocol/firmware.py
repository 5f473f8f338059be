"""What a firmware says about itself: the ``firmware::info:{…}`` marker Notehub reads, and its boot banner."""

from __future__ import annotations

import json
import re
from typing import Any

MARKER = b"firmware::info:"


def firmware_info(image: bytes) -> dict[str, Any]:
    """The ``firmware::info:{…}`` JSON embedded in an image, as Notehub reads it (``{}`` if absent or bad)."""
    marker = image.find(MARKER)
    if marker < 0:
        return {}
    start = marker + len(MARKER)
    end = image.find(b"}", start)
    try:
        info = json.loads(image[start:end + 1])
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def banner_line(text: str, regex: re.Pattern[str], *, complete: bool = True) -> str | None:
    """The whole console line in which ``regex`` first matches (stripped), or ``None``; with ``complete``,
    only once that line has ended (so the log shows all of it)."""
    match = regex.search(text)
    if match is None:
        return None
    end = text.find("\n", match.end())
    if end < 0 and complete:
        return None
    start = text.rfind("\n", 0, match.start()) + 1
    return text[start:None if end < 0 else end].strip()
