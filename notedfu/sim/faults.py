"""Fault injection for the simulated Notecard.

A fault spec is ``KIND[:REQUEST][@N][+]``:

* without ``:REQUEST``, ``KIND`` fires on the N-th data request (``dfu.get``
  with a length, counted from 1; default 1);
* with it, on the N-th request of that name (``trace:hub.get``,
  ``garbage:dfu.get@2``: the second ``dfu.get`` of any kind, the readiness
  probe included);

once — or on every such request from the N-th on with a trailing ``+``.
Several specs may be given, comma-separated or repeated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FAULT_KINDS: dict[str, str] = {
    "drop": "drop bytes from the middle of the response line",
    "corrupt": "flip one byte of the response (the CRC no longer matches)",
    "io": "answer {io} instead of data",
    "restart": "the card restarts: no answer, hub mode back to its default, DFU mode left",
    "md5": "the chunk's md5 status is wrong",
    "truncate": "the payload is shorter than asked for",
    "garbage": "a line of binary garbage before the answer",
    "trace": "a debug trace line before the answer (as a card with tracing on prints)",
    "halfline": "the first half of an answer line, cut short by a reset, before the real answer",
    "badb64": "the payload is not valid base64",
    "nonewline": "the answer never ends (no newline)",
    "nohandback": "once N data requests were served, hub.set cannot take the card out of DFU mode ({io})",
    "dfuexit": "DFU mode ends just before the request (the card's 15-minute timer ran out)",
}
"""Every fault kind, with what it does."""

DATA_FAULTS = frozenset({"md5", "truncate", "badb64", "drop", "corrupt", "nonewline"})
"""Faults that damage the data itself (in binary mode: the card.binary.get answer)."""

MODE_FAULTS = frozenset({"nohandback"})
"""Faults that hit hub.set rather than a data request."""

WIRE_FAULTS = frozenset({"drop", "corrupt", "garbage", "trace", "halfline", "nonewline", "io", "restart", "dfuexit"})
"""Faults that can hit any request named with ``:REQUEST``."""

_SPEC = re.compile(r"^(?P<kind>[a-z0-9]+)(?::(?P<request>[a-z0-9.]+))?(?:@(?P<at>\d+))?(?P<repeat>\+)?$")


@dataclass
class Fault:
    """One armed fault."""

    kind: str
    at: int = 1
    repeat: bool = False
    fired: int = 0
    request: str | None = None  # a request name; None: data requests

    def due(self, request_number: int) -> bool:
        """Whether this fault fires on the ``request_number``-th counted request."""
        if self.repeat:
            return request_number >= self.at
        return request_number == self.at and self.fired == 0


def parse_faults(specs: list[str] | str | None, kinds: dict[str, str] | None = None) -> list[Fault]:
    """Parse fault specs against ``kinds`` (default: the Notecard's); ``ValueError`` names a bad one."""
    kinds = FAULT_KINDS if kinds is None else kinds
    if not specs:
        return []
    if isinstance(specs, str):
        specs = [specs]
    faults = []
    for item in (s.strip() for spec in specs for s in spec.split(",")):
        if not item:
            continue
        match = _SPEC.match(item)
        if not match or match["kind"] not in kinds:
            raise ValueError(f"bad fault spec {item!r}: expected KIND[:REQUEST][@N][+] with KIND one of "
                             f"{', '.join(kinds)}")
        if match["request"] and match["kind"] not in WIRE_FAULTS:
            raise ValueError(f"bad fault spec {item!r}: only {', '.join(sorted(WIRE_FAULTS))} can hit a named "
                             "request")
        faults.append(Fault(match["kind"], int(match["at"] or 1), bool(match["repeat"]), request=match["request"]))
    return faults
