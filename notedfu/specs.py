"""The one parser of device spec strings, and the typed reading of their options.

Every spec notedfu takes (``--notecard``, ``--target``, ``--console``, the rig
files' ports) has one of three forms::

    PREFIX:REST        a named way in: i2c:, stm32flash:, openocd:, dfu-util:, st-flash:, qemu:
    SCHEME://…?query   a pyserial URL (sim://, rfc2217://, spy://…): its query is its options
    /dev/PATH?k=v&…    a device path with options

:func:`parse_spec` splits any of them into a :class:`Spec`; what each kind of
spec accepts is checked where it is used (:func:`check_option_names`).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from notedfu.errors import UsageError

PREFIXES = ("i2c", "stm32flash", "openocd", "dfu-util", "st-flash", "qemu")
"""Spec prefixes (``NAME:``, not a URL's ``NAME://``)."""


@dataclass(frozen=True)
class Spec:
    """A parsed spec: ``prefix`` ("" if none), the ``device`` (path or URL, a URL with its query) and its
    ``options`` (a path's ``?k=v`` or the URL's query; each key → every value given, the last one wins)."""

    text: str
    prefix: str
    device: str
    options: dict[str, list[str]] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        """The URL scheme of the device, lower case ("" for a path)."""
        return urllib.parse.urlsplit(self.device).scheme.lower() if "://" in self.device else ""

    @property
    def host(self) -> str:
        """A URL's network location, lower case (``sim://stm32`` → ``stm32``)."""
        return urllib.parse.urlsplit(self.device).netloc.lower()

    def text_option(self, key: str, default: str = "") -> str:
        """The last value given for ``key``."""
        return self.options.get(key, [default])[-1]

    def int_option(self, key: str, default: int | None = None) -> int | None:
        """An integer option (decimal or 0x hex); ``UsageError`` (E_BAD_SPEC) if malformed."""
        return int_option(self.options, key, self.text) if key in self.options else default

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        """An option that must be one of ``choices``; ``UsageError`` (E_BAD_SPEC) otherwise."""
        value = self.text_option(key, default)
        if value not in choices:
            raise UsageError(f"bad {key} {value!r} in {self.text!r}: {' or '.join(choices)}", code="E_BAD_SPEC")
        return value


def parse_spec(text: str) -> Spec:
    """Split ``text`` into prefix, device and options (see the module's docstring)."""
    prefix, rest = "", text
    head, sep, tail = text.partition(":")
    if sep and head in PREFIXES and not tail.startswith("//"):
        prefix, rest = head, tail
    if "://" in rest:
        query = urllib.parse.urlsplit(rest).query
        return Spec(text, prefix, rest, urllib.parse.parse_qs(query, keep_blank_values=True))
    device, _, query = rest.partition("?")
    return Spec(text, prefix, device, urllib.parse.parse_qs(query, keep_blank_values=True))


def split_options(spec: str) -> tuple[str, dict[str, list[str]]]:
    """(device, options) of a spec without prefix; a URL (``scheme://…``) keeps its own query and gets none."""
    parsed = parse_spec(spec)
    return (parsed.device, {}) if parsed.scheme else (parsed.device, parsed.options)


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
