"""The Notecard's JSON request protocol without I/O: framing, the ``crc`` field, answers sorted.

Everything here is what Blues' note-c (``n_request.c``) does, the library the
Notecard firmware and the other Blues SDKs agree with:

* A request is compact JSON, then ``,"crc":"SSSS:CCCCCCCC"`` before the closing
  brace (a space instead of the comma when the object is empty: ``{}`` becomes
  ``{ "crc":"0001:A3A6BF43"}``), then a newline. ``SSSS`` is a 16-bit sequence
  number, ``CCCCCCCC`` the IEEE CRC-32 of the JSON without the field, both
  upper-case hex (``_crcAdd``).
* An answer is one line. If it carries a crc field, it is the last 22
  characters before the closing brace, its sequence number must be the
  request's and its CRC must match. An answer with ``"err"`` is not checked
  (``_crcError``: card errors are not transmission errors). Once a card has sent
  one crc field, an answer without one is corrupt.
* A request is sent again with the *same* sequence number; the number moves on
  once per request, not per try.

:class:`AnswerReader` sorts each line the card sends into an answer to this
request, a stale answer to an earlier one, a corrupt answer, or junk (a debug
trace, the tail of a line cut by a card reset): the transaction loop in
:mod:`notedfu.notecard.client` decides what to do with each.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from notedfu.checksums import crc32

CRC_FIELD_LENGTH = 22  # ,"crc":"SSSS:CCCCCCCC"  (note-c CRC_FIELD_LENGTH)
_CRC_FIELD = re.compile(r'"crc":"([0-9A-Fa-f]{4}):([0-9A-Fa-f]{8})"\}$')
_CRC_FIELD_BYTES = re.compile(rb'([ ,])"crc":"([0-9A-Fa-f]{4}):([0-9A-Fa-f]{8})"\}\s*$')  # as a card reads it
_TAG = re.compile(r"\{([a-z0-9-]+)\}")

# Requests that can be sent again without changing anything on the card. A
# lost answer to one of these is retried; anything else (dfu.status stop,
# dfu.put, card.binary.put, card.time with a time, …) is sent once.
_IDEMPOTENT = frozenset({"hub.get", "hub.set", "hub.status", "hub.sync.status", "dfu.get", "card.version",
                         "card.binary", "card.binary.get", "card.dfu", "card.time", "card.status"})


def add_crc(text: str, seq: int) -> str:
    """``text`` (compact JSON ending in ``}``) with note-c's crc field for ``seq`` appended."""
    if len(text) < 2 or not text.endswith("}"):
        raise ValueError("not a JSON object")
    separator = " " if ":" not in text else ","
    return f'{text[:-1]}{separator}"crc":"{seq & 0xFFFF:04X}:{crc32(text.encode()):08X}"}}'


def check_crc(line: bytes) -> tuple[bytes, int | None, bool]:
    """Split a request line into (JSON without crc, seq or None, crc ok).

    Hosts frame the field as note-c does (``_crcAdd``) or as note-python does
    (no separator in an empty object); both are taken.
    """
    match = _CRC_FIELD_BYTES.search(line)
    if not match:
        bare = re.search(rb'\{"crc":"([0-9A-Fa-f]{4}):([0-9A-Fa-f]{8})"\}\s*$', line)
        if not bare:
            return line, None, True
        return b"{}", int(bare[1], 16), crc32(b"{}") == int(bare[2], 16)
    body = line[:match.start()] + b"}"
    seq = int(match[2], 16)
    return body, seq, crc32(body) == int(match[3], 16)


def encode_request(req: dict[str, Any], seq: int) -> bytes:
    """The bytes of one request: compact JSON with its crc field, newline-terminated."""
    return (add_crc(json.dumps(req, separators=(",", ":")), seq) + "\n").encode()


def is_idempotent(req: dict[str, Any]) -> bool:
    """Whether ``req`` may be sent again when its answer is lost."""
    name = req.get("req")
    if name == "dfu.status":
        return not req.get("stop")  # stop deletes the card's image: never twice by accident
    if name == "card.time":
        return "time" not in req
    if name == "dfu.put":  # a bare dfu.put only asks whether the card is ready or still writing
        return not any(key in req for key in ("body", "offset", "length", "payload"))
    return name in _IDEMPOTENT


def error_tags(err: str) -> frozenset[str]:
    """The ``{tags}`` in a card's error text."""
    return frozenset(_TAG.findall(err))


def is_retryable_error(err: str) -> bool:
    """An ``{io}`` error the card would not repeat (note-c: retried unless ``{not-supported}``)."""
    tags = error_tags(err)
    return "io" in tags and "not-supported" not in tags and "bad-bin" not in tags


@dataclass
class Line:
    """One line the card sent, sorted."""

    kind: str  # "answer", "stale", "corrupt", "junk"
    body: dict[str, Any] = field(default_factory=dict)
    why: str = ""


def _printable(raw: bytes, limit: int = 40) -> str:
    text = raw.decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text[:limit] + ("…" if len(text) > limit else "")


class AnswerReader:
    """Sorts answer lines; remembers whether this card has ever sent a crc field."""

    def __init__(self) -> None:
        self.card_sends_crc = False

    def sort(self, raw: bytes, seq: int) -> Line:
        """Sort one line (terminator included or not) received while waiting for request ``seq``."""
        text = raw.decode("utf-8", "replace").rstrip("\r\n\t ")
        if not text.startswith("{") or not text.endswith("}"):
            return Line("junk", why=f"a line that is not JSON ({_printable(raw)!r})")
        try:
            body = json.loads(text)
        except ValueError:
            return Line("junk", why=f"a line that is not JSON ({_printable(raw)!r})")
        if not isinstance(body, dict):
            return Line("junk", why="a JSON line that is not an object")
        match = _CRC_FIELD.search(text)
        if "err" in body or match is None:
            body.pop("crc", None)
            if match is None and self.card_sends_crc and "err" not in body:
                return Line("corrupt", body, "an answer without its crc field")
            return Line("answer", body)
        self.card_sends_crc = True
        body.pop("crc", None)
        start = match.start() - 1  # the separator: "," or " " (note-c reads it at a fixed offset)
        if start < 1 or text[start] not in ", ":
            return Line("corrupt", body, "a crc field in the wrong place")
        if int(match[1], 16) != seq & 0xFFFF:
            return Line("stale", body, f"an answer to request {int(match[1], 16)}")
        if crc32((text[:start] + "}").encode()) != int(match[2], 16):
            return Line("corrupt", body, "an answer whose crc does not match")
        return Line("answer", body)
