"""What a firmware image says about itself: the ``firmware::info:{…}`` marker Notehub reads."""

from __future__ import annotations

import json
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
