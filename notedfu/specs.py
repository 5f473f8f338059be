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


def check_option_names(opts: dict[str, object], known: frozenset[str] | set[str], what: str) -> None:
    """``ValueError`` for an option nobody reads: ``?buad=9600`` must not pass for nothing."""
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(known)) or 'none'})")


def int_option(options: dict[str, list[str]], key: str, spec: str) -> int | None:
    """An integer option (decimal or 0x hex), ``None`` if absent; ``UsageError`` if malformed."""
    if key not in options:
        return None
    try:
        return int(options[key][-1], 0)
    except ValueError:
        raise UsageError(f"bad {key} in {spec!r}", code="E_BAD_SPEC") from None


def parse_region(text: str) -> tuple[int, int]:
    """``START:END`` (decimal or 0x hex) → ``(start, end)``; ``ValueError`` says what is wrong."""
    start, sep, end = text.partition(":")
    if not sep:
        raise ValueError(f"expected START:END, e.g. 0x0801F800:0x08020000, not {text!r}")
    try:
        low, high = int(start, 0), int(end, 0)
    except ValueError:
        raise ValueError(f"not a number in {text!r}") from None
    if high <= low:
        raise ValueError(f"empty region {text!r}")
    return low, high
