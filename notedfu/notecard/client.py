"""Notecard requests with classified errors.

Wraps a note-python card object: every request goes through note-python's
``Transaction`` (CRC, sequence numbers, retries on ``{io}``), and every answer
is checked before anyone trusts it. Errors come back as exceptions with the
card's ``{tags}`` parsed, so callers decide on tags, not on message text.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator

from notedfu.checksums import md5_hex
from notedfu.cobs import CobsError, cobs_decode, cobs_encode
from notedfu.errors import BadResponseError, CardError, IntegrityError, LinkError, NotedfuError

_TAG = re.compile(r"\{([a-z0-9-]+)\}")


class CardRequestError(CardError):
    """The card answered ``{"err": …}``."""

    def __init__(self, request: str, err: str) -> None:
        self.request = request
        self.err = err
        self.tags = frozenset(_TAG.findall(err))
        super().__init__(f"{request}: {err}", code=_code_for(self.tags, err))


def _code_for(tags: frozenset[str], err: str) -> str:
    if "dfu-not-ready" in tags:
        return "E_DFU_NOT_READY"
    if "hub-mode" in tags or "not currently in the DFU" in err:
        return "E_DFU_MODE_LOST"
    if "dfu-dl-chunk-length" in tags:
        return "E_CHUNK_TOO_LARGE"
    if "not-supported" in tags:
        return "E_NOT_SUPPORTED"
    return "E_CARD_ERROR"


class CardClient:
    """Requests to one Notecard."""

    def __init__(self, card: Any) -> None:
        self.card = card

    def close(self) -> None:
        """Release the serial port or I2C bus (note-python has no close of its own)."""
        port = getattr(self.card, "uart", None)
        if port is None:
            port = getattr(getattr(self.card, "i2c", None), "bus", None)
        close = getattr(port, "close", None)
        if callable(close):
            close()

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send ``req``; return the answer; raise if the card said ``err``."""
        name = str(req.get("req", "?"))
        try:
            rsp = self.card.Transaction(req)
        except (KeyboardInterrupt, SystemExit):
            self.card._reset_required = True  # an answer may be half-read: resync first next time
            raise
        except Exception as exc:  # note-python raises bare Exception for every I/O failure
            self.card._reset_required = True
            raise LinkError(f"{name}: no valid answer from the Notecard ({exc})", code="E_NOTECARD_IO") from exc
        if not isinstance(rsp, dict):
            raise BadResponseError(f"{name}: answer is not a JSON object", code="E_BAD_RESPONSE")
        rsp.pop("crc", None)
        if "err" in rsp:
            raise CardRequestError(name, str(rsp["err"]))
        return rsp

    def binary_capacity(self) -> int:
        """The card's binary store size (``card.binary`` ``max``), or 0 if its firmware has no binary mode."""
        try:
            capacity = self.request({"req": "card.binary"}).get("max")
        except CardRequestError as exc:
            if exc.code == "E_NOT_SUPPORTED" or "bad-bin" in exc.tags:
                return 0
            raise
        return capacity if isinstance(capacity, int) and not isinstance(capacity, bool) and capacity > 0 else 0

    @contextmanager
    def _binary_exchange(self, name: str) -> Iterator[Any]:
        """Hold the card for a request whose raw bytes follow it; any failure forces a resync,
        since unread (or half-sent) binary bytes may still be on the link."""
        card = self.card
        try:
            card.lock()
            try:
                yield card
            finally:
                card.unlock()
        except NotedfuError:
            card._reset_required = True
            raise
        except Exception as exc:
            card._reset_required = True
            raise LinkError(f"{name}: no valid answer ({exc})", code="E_NOTECARD_IO") from exc
        except BaseException:  # KeyboardInterrupt, SystemExit
            card._reset_required = True
            raise

    def binary_get(self, length: int, expected_md5: str | None = None) -> bytes:
        """Read ``length`` bytes from the card's binary store (``card.binary.get``).

        The data follows the JSON answer as one COBS-encoded line of the length
        the answer announces; the md5 the card sends is checked, and
        ``expected_md5`` too when given.
        """
        with self._binary_exchange("card.binary.get") as card:
            rsp = card.Transaction({"req": "card.binary.get", "offset": 0, "length": length}, lock=False)
            if not isinstance(rsp, dict):
                raise BadResponseError("card.binary.get: answer is not a JSON object")
            if "err" in rsp:
                raise CardRequestError("card.binary.get", str(rsp["err"]))
            size = rsp.get("cobs")
            if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= 2 * length + 16:
                raise BadResponseError(f"card.binary.get: bad cobs length {size!r}", code="E_BAD_RESPONSE")
            encoded = card.receive_count(size + 1)
            if not encoded.endswith(b"\n"):
                raise IntegrityError("card.binary.get: binary data does not end where announced",
                                     code="E_CHUNK_ENCODING")
            try:
                data = cobs_decode(encoded[:-1])
            except CobsError as exc:
                raise IntegrityError(f"card.binary.get: bad COBS data ({exc})", code="E_CHUNK_ENCODING") from exc
        digest = md5_hex(data)
        if digest != rsp.get("status") or (expected_md5 and digest != expected_md5):
            raise IntegrityError("card.binary.get: data does not match its md5", code="E_CHUNK_MD5")
        return data

    def binary_put(self, data: bytes) -> None:
        """Fill the card's binary store with ``data`` (``card.binary.put``), then check what it holds.

        The COBS bytes follow the request's answer unpaced, as note-c and
        note-python send them: the card takes them straight into its binary
        store, not through its line buffer.
        """
        encoded = cobs_encode(data) + b"\n"
        digest = md5_hex(data)
        with self._binary_exchange("card.binary.put") as card:
            rsp = card.Transaction({"req": "card.binary.put", "cobs": len(encoded) - 1, "status": digest},
                                   lock=False)
            if isinstance(rsp, dict) and "err" in rsp:
                raise CardRequestError("card.binary.put", str(rsp["err"]))
            card.transmit(encoded, delay=False)
        held = self.request({"req": "card.binary"})
        if held.get("length") != len(data) or held.get("status", digest) != digest:
            raise IntegrityError(f"card.binary.put: the card holds {held.get('length')} bytes, not the "
                                 f"{len(data)} sent", code="E_CHUNK_LENGTH")

    def force_resync(self) -> None:
        """Make the next request start with note-python's reset handshake."""
        self.card._reset_required = True
