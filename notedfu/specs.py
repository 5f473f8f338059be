"""Device spec strings with options: ``/dev/ttyUSB0?baud=57600``, ``i2c:/dev/i2c-1?address=0x17``."""

from __future__ import annotations

import urllib.parse

from notedfu.errors import UsageError


def split_options(spec: str) -> tuple[str, dict[str, list[str]]]:
    """(device, options); a URL (``scheme://…``) keeps its own query and gets no options."""
    if "://" in spec or "?" not in spec:
        return spec, {}
    device, query = spec.split("?", 1)
    return device, urllib.parse.parse_qs(query)


def int_option(options: dict[str, list[str]], key: str, spec: str) -> int | None:
    """An integer option (decimal or 0x hex), ``None`` if absent; ``UsageError`` if malformed."""
    if key not in options:
        return None
    try:
        return int(options[key][-1], 0)
    except ValueError:
        raise UsageError(f"bad {key} in {spec!r}", code="E_BAD_SPEC") from None
