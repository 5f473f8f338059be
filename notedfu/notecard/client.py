"""Notecard transactions: one place that sends requests, waits for answers and recovers.

:meth:`CardClient.request` is the transaction loop every caller goes through
(the protocol rules are in :mod:`notedfu.notecard.wire`, the bytes in
:mod:`notedfu.notecard.transport`):

* a line that is not one JSON object (a debug trace, half a line after a card
  reset), or a stale answer to an earlier request, is skipped and the wait
  goes on — nothing is sent again for it;
* a corrupt answer, an ``{io}`` error from the card, or a lost answer is
  retried after 500 ms with the same sequence number (note-c's rule and
  pause), at most ``retries`` times; a lost answer is retried only for
  requests that are safe to send twice (:func:`~notedfu.notecard.wire.is_idempotent`),
  and first resynchronises the link with the newline handshake;
* ``{heartbeat}`` answers mean "still working": the wait starts again;
* what finally surfaces is one line in our words with a stable code.

Card errors come back as :class:`CardRequestError` with the card's ``{tags}``
parsed, so callers decide on tags, not on message text.
"""

from __future__ import annotations

import time
from typing import Any

from notedfu import stopping
from notedfu.checksums import md5_hex
from notedfu.protocol.cobs import CobsError, cobs_decode, cobs_encode
from notedfu.errors import (BadResponseError, CardIO, CardRequestError, ChunkRefused, DfuModeLost, DfuNotReady,
                            IntegrityError, LinkError, NotSupported)
from notedfu.notecard.transport import CardLink, LinkTimeout
from notedfu.protocol.notecard import AnswerReader, encode_request, error_tags, is_idempotent, is_retryable_error
from notedfu.portlock import PortLock

RETRIES = 5  # note-c CARD_REQUEST_RETRIES_ALLOWED
RETRY_PAUSE = 0.5  # note-c RETRY_DELAY_MS
MAX_JUNK_LINES = 16  # non-JSON lines tolerated while waiting for one answer


def card_error(request: str, err: str) -> CardRequestError:
    """The card's ``{"err": …}`` as the error class its ``{tags}`` (or, for old firmware, its text) name."""
    tags = error_tags(err)
    if "dfu-not-ready" in tags:
        return DfuNotReady(request, err, tags)
    if "hub-mode" in tags or "not currently in the DFU" in err:
        return DfuModeLost(request, err, tags)
    if "dfu-dl-chunk-length" in tags:
        return ChunkRefused(request, err, tags)
    if "not-supported" in tags:
        return NotSupported(request, err, tags)
    if "io" in tags:
        return CardIO(request, err, tags)
    return CardRequestError(request, err, tags)


class _Lost(Exception):
    """No usable answer this try."""

    def __init__(self, why: str, resync: bool) -> None:
        super().__init__(why)
        self.why = why
        self.resync = resync


class CardClient:
    """Requests to one Notecard over one link."""

    def __init__(self, link: CardLink, *, timeout: float = 30.0, retries: int = RETRIES,
                 retry_pause: float = RETRY_PAUSE, lock: PortLock | None = None) -> None:
        self.link = link
        self.timeout = timeout
        self.retries = retries
        self.retry_pause = retry_pause
        self.lock = lock
        self.answers = AnswerReader()
        self._seq = 0
        self._resync_first = False
        self.junk_lines = 0  # lines skipped because they were not an answer (for tests and logs)

    def close(self) -> None:
        """Release the link and its port lock."""
        try:
            self.link.close()
        finally:
            if self.lock is not None:
                self.lock.release()

    def resync(self) -> None:
        """The newline handshake, now (:class:`LinkError` if the card does not answer)."""
        self._resync_first = False
        try:
            self.link.reset()
        except BaseException:
            self._resync_first = True
            raise

    # ------------------------------------------------------------ transactions
    def request(self, req: dict[str, Any], *, retries: int | None = None,
                timeout: float | None = None) -> dict[str, Any]:
        """Send ``req``; return the answer; raise :class:`CardRequestError` if the card said ``err``.

        ``retries`` bounds the tries after the first (default 5); 0 sends the
        request once, as a probe whose failure the caller interprets.
        """
        rsp = self._transact(req, retries, timeout)
        if "err" in rsp:
            raise card_error(str(req.get("req")), str(rsp["err"]))
        return rsp

    def _transact(self, req: dict[str, Any], retries: int | None, timeout: float | None) -> dict[str, Any]:
        name = str(req.get("req", "?"))
        resend_lost = is_idempotent(req)
        tries = 1 + (self.retries if retries is None else retries)
        seq, self._seq = self._seq, (self._seq + 1) & 0xFFFF
        wire = encode_request(req, seq)
        why = ""
        for attempt in range(tries):
            stopping.check()
            if attempt:
                stopping.sleep(self.retry_pause)
            try:
                if self._resync_first:
                    self.resync()
                self.link.discard_input()
                self.link.send(wire)
                rsp = self._await_answer(seq, timeout if timeout is not None else self.timeout)
            except _Lost as lost:
                why, self._resync_first = lost.why, self._resync_first or lost.resync
                if resend_lost:
                    continue
                break
            except LinkError as exc:
                why, self._resync_first = exc.message, True
                if resend_lost:
                    continue
                break
            except BaseException:
                self._resync_first = True  # interrupted mid-answer: the link holds half a line
                raise
            if "err" in rsp and is_retryable_error(str(rsp["err"])) and attempt + 1 < tries:
                why = f"the card answered {str(rsp['err'])[:120]!r}"
                continue
            return rsp
        times = f" (tried {tries} times)" if resend_lost and tries > 1 else ""
        raise LinkError(f"{name}: no valid answer from the Notecard: {why}{times}", code="E_NOTECARD_IO")

    def _await_answer(self, seq: int, timeout: float) -> dict[str, Any]:
        """Read lines until the answer to request ``seq``; skip junk and stale answers."""
        deadline = time.monotonic() + timeout
        junk = 0
        while True:
            try:
                raw = self.link.read_line(deadline)
            except LinkTimeout as exc:
                raise _Lost(f"nothing within {timeout:g} s" + (" (only lines that were not answers)"
                                                                 if junk else ""), resync=True) from exc
            line = self.answers.sort(raw, seq)
            if line.kind == "answer":
                if "heartbeat" in error_tags(str(line.body.get("err", ""))):
                    deadline = time.monotonic() + timeout  # "still working" (note-c: not a try)
                    continue
                return line.body
            if line.kind == "corrupt":
                raise _Lost(line.why, resync=False)
            self.junk_lines += 1
            junk += 1
            if junk > MAX_JUNK_LINES:
                raise _Lost(f"{junk} lines that were not an answer, the last {line.why}", resync=True)

    # ------------------------------------------------------------ binary store
    def binary_capacity(self) -> int:
        """The card's binary store size (``card.binary`` ``max``), or 0 if its firmware has no binary mode."""
        try:
            capacity = self.request({"req": "card.binary"}).get("max")
        except NotSupported:
            return 0
        except CardRequestError as exc:
            if "bad-bin" not in exc.tags:
                raise
            # The store holds what an interrupted transfer left (note-c swallows {bad-bin} because it
            # overwrites the data): the card does have binary mode, so empty the store and ask again.
            try:
                capacity = self.request({"req": "card.binary", "delete": True}).get("max")
            except CardRequestError as again:
                if isinstance(again, NotSupported) or "bad-bin" in again.tags:
                    return 0
                raise
        return capacity if isinstance(capacity, int) and not isinstance(capacity, bool) and capacity > 0 else 0

    def binary_get(self, length: int, expected_md5: str | None = None) -> bytes:
        """Read ``length`` bytes from the card's binary store (``card.binary.get``).

        The data follows the JSON answer as one COBS-encoded line of the length
        the answer announces (note-c ``NoteBinaryStoreReceive``); the md5 the
        card sends is checked, and ``expected_md5`` too when given. Sent once:
        a lost answer may leave binary bytes on the link, so the caller retries
        the whole read after a resync.
        """
        rsp = self._transact({"req": "card.binary.get", "offset": 0, "length": length}, 0, None)
        if "err" in rsp:
            raise card_error("card.binary.get", str(rsp["err"]))
        size = rsp.get("cobs")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= 2 * length + 16:
            self._resync_first = True
            raise BadResponseError(f"card.binary.get: bad cobs length {size!r}", code="E_BAD_RESPONSE")
        try:
            encoded = self.link.read_exact(size + 1)
        except BaseException:
            self._resync_first = True
            raise
        if not encoded.endswith(b"\n"):
            self._resync_first = True
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
        self.request({"req": "card.binary.put", "cobs": len(encoded) - 1, "status": digest})
        try:
            self.link.send_raw(encoded)
        except BaseException:
            self._resync_first = True
            raise
        held = self.request({"req": "card.binary"})
        if held.get("length") != len(data) or held.get("status", digest) != digest:
            raise IntegrityError(f"card.binary.put: the card holds {held.get('length')} bytes, not the "
                                 f"{len(data)} sent", code="E_CHUNK_LENGTH")
