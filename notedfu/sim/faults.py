"""Fault injection for the simulated Notecard.

A fault spec is ``KIND[@N][+]``: fire ``KIND`` on the N-th data request
(``dfu.get`` with a length, counted from 1; default 1), once — or on every data
request from the N-th on with a trailing ``+``. Several specs may be given,
comma-separated or repeated.
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
    "garbage": "a line of garbage before the answer",
    "badb64": "the payload is not valid base64",
    "nonewline": "the answer never ends (no newline)",
    "nohandback": "once N data requests were served, hub.set cannot take the card out of DFU mode ({io})",
}
"""Every fault kind, with what it does."""

DATA_FAULTS = frozenset({"md5", "truncate", "badb64", "drop", "corrupt", "nonewline"})
"""Faults that damage the data itself (in binary mode: the card.binary.get answer)."""

MODE_FAULTS = frozenset({"nohandback"})
"""Faults that hit hub.set rather than a data request."""

_SPEC = re.compile(r"^(?P<kind>[a-z0-9]+)(?:@(?P<at>\d+))?(?P<repeat>\+)?$")


@dataclass
class Fault:
    """One armed fault."""

    kind: str
    at: int = 1
    repeat: bool = False
    fired: int = 0

    def due(self, request_number: int) -> bool:
        """Whether this fault fires on the ``request_number``-th data request."""
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
            raise ValueError(f"bad fault spec {item!r}: expected KIND[@N][+] with KIND one of {', '.join(kinds)}")
        faults.append(Fault(match["kind"], int(match["at"] or 1), bool(match["repeat"])))
    return faults
