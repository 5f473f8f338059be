"""Side-loading: put a host image onto a Notecard with ``dfu.put``, as if Notehub had delivered it.

A rig uses this to test the whole update without Notehub. The sequence is the
one Blues' note-cli sends for ``notecard -sideload`` (research-notecard §D):

1. ``card.binary`` — does the card take binary data, and how much at a time?
2. ``card.time`` — ``dfu.put`` needs the card to know the time; a card that has
   never synced gets the host's clock (only then: the card refuses to reset it).
3. ``hub.get`` (mode saved to disk), ``hub.set mode:dfu``, bare ``dfu.put``
   until the card stops answering ``{dfu-not-ready}``.
4. ``dfu.put body:{length, md5, crc32, source, name, type, created}`` — the
   card answers the chunk size it wants (and ``mode:"snappy"`` on old firmware).
5. Chunks at increasing offsets: ``dfu.put offset length payload status`` (base64),
   or ``card.binary.put`` + the COBS bytes, checked with ``card.binary``, then
   ``dfu.put offset length status binary:true``; ``status`` is the chunk's MD5.
   While an answer says ``pending``, bare ``dfu.put`` until it does not.
6. The card handed back in its mode, and ``dfu.status`` must now offer exactly
   this image (length and MD5): anything else is an error.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notedfu import stopping
from notedfu.checksums import crc32, md5_hex
from notedfu.errors import BadResponseError, CardError, IntegrityError, NotedfuError, UsageError
from notedfu.events import Events
from notedfu.notecard.chunk_loop import ChunkLoop
from notedfu.notecard.client import CardClient
from notedfu.notecard.dfu import MAX_IMAGE_BYTES, ImageInfo
from notedfu.notecard.mode import CardMode
from notedfu.notecard.staging import Staging
from notedfu.protocol.firmware import firmware_info


@dataclass
class SideloadOptions:
    """Knobs of a side-load."""

    binary: bool | None = None  # None: binary when the card offers card.binary
    chunk: int | None = None  # at most this many bytes per dfu.put (default: what the card asks for)
    set_time: bool = True  # give a card that has no time the host's clock
    ready_timeout: float = 120.0  # how long DFU mode may take to become active
    ready_poll: float = 1.0  # between probes while it does
    pending_poll: float = 0.1  # between polls while the card writes a chunk away
    pending_timeout: float = 60.0
    retries: int = 3  # tries per chunk


@dataclass
class SideloadResult:
    """What a side-load did."""

    length: int
    md5: str
    crc32: int
    version: str
    chunks: int = 0
    chunk_size: int = 0
    binary: bool = False
    seconds: float = 0.0
    card_mode: str = ""
    clock_set: bool = False


class Sideloader:
    """Writes an image into a Notecard's host-firmware storage."""

    def __init__(self, client: CardClient, staging: Staging, events: Events | None = None,
                 options: SideloadOptions | None = None) -> None:
        self.client = client
        self.events = events or Events(source="LOCAL")
        self.options = options or SideloadOptions()
        self.mode = CardMode(client, staging, self.events)

    def sideload(self, image: bytes, name: str) -> SideloadResult:
        """Put ``image`` on the card under the file name ``name``; return once the card offers it."""
        if not 0 < len(image) <= MAX_IMAGE_BYTES:
            raise UsageError(f"an image must have 1..{MAX_IMAGE_BYTES} bytes, not {len(image)}", code="E_IMAGE_FILE")
        started = time.monotonic()
        version = firmware_info(image).get("version")
        result = SideloadResult(len(image), md5_hex(image), crc32(image),
                                version if isinstance(version, str) else "")
        self.mode.repair()
        capacity = 0 if self.options.binary is False else self.client.binary_capacity()
        result.clock_set = self._ensure_clock()
        saved = self.mode.remember()
        try:
            self.events.step("enter_dfu", "switching the Notecard to DFU mode")
            self._enter_dfu()
            chunk = self._begin(result, Path(name).name or "firmware.bin", capacity)
            result.binary, result.chunk_size = capacity > 0, chunk
            self._send(image, chunk, result)
        finally:
            self.events.step("exit_dfu", "handing the Notecard back")
            result.card_mode = self.mode.hand_back(saved)
        self._check_offered(result)
        result.seconds = time.monotonic() - started
        return result

    # ------------------------------------------------------------ before
    def _ensure_clock(self) -> bool:
        """Give the card the host's time if it has none; return whether it was set."""
        if "time" in self.client.request({"req": "card.time"}):
            return False
        if not self.options.set_time:
            raise CardError("the Notecard does not know the time, and dfu.put needs it (drop --no-set-time, "
                            "or let the card sync with Notehub once)", code="E_CARD_NO_TIME")
        self.client.request({"req": "card.time", "time": int(time.time())})
        self.events.message("the Notecard had no time: set it from this host's clock", "warning")
        return True

    def _begin(self, result: SideloadResult, name: str, capacity: int) -> int:
        """``dfu.put body``: announce the image; return the chunk size to use."""
        body = {"created": int(time.time()), "source": name, "name": name, "md5": result.md5,
                "crc32": result.crc32, "length": result.length, "type": "firmware"}
        rsp = self.client.request({"req": "dfu.put", "body": body})
        if rsp.get("mode") == "snappy" and not capacity:
            raise CardError("the Notecard asks for snappy-compressed chunks (firmware without card.binary), "
                            "which notedfu does not send; update the Notecard firmware (≥ 5.3.1)",
                            code="E_NOT_SUPPORTED")
        wanted = rsp.get("length")
        if not isinstance(wanted, int) or isinstance(wanted, bool) or wanted <= 0:
            raise BadResponseError(f"dfu.put: the card gave no chunk length ({rsp})", code="E_BAD_RESPONSE")
        chunk = capacity or wanted  # a binary-capable card takes a whole binary store per chunk (note-cli)
        return min(chunk, self.options.chunk) if self.options.chunk else chunk

    # ------------------------------------------------------------ transfer
    def _send(self, image: bytes, chunk: int, result: SideloadResult) -> None:
        taken = -1  # the offset of the chunk the card took (it may still be writing it away)

        def step(offset: int) -> int:
            """One chunk; a chunk the card took is never sent again (DFU mode lost while it was being
            written away: only the wait is repeated, once the loop has entered DFU mode again)."""
            nonlocal taken
            data = image[offset:offset + chunk]
            rsp: dict[str, Any] = {"pending": True}
            if taken != offset:
                rsp, taken = self._put_chunk(offset, data, result.binary), offset
            self._wait_written(rsp)
            result.chunks += 1
            return len(data)

        self.events.step("transfer", "writing the image to the Notecard", percent=0.0, done=0, total=len(image))
        ChunkLoop(self.events, self.mode, "writing the image to the Notecard", self.options.retries,
                  self._enter_dfu, stopping.check).run(0, len(image), step)

    def _enter_dfu(self) -> None:
        self.mode.wait_until_ready({"req": "dfu.put"}, self.options.ready_timeout, self.options.ready_poll)

    def _put_chunk(self, offset: int, data: bytes, binary: bool) -> dict[str, Any]:
        req: dict[str, Any] = {"req": "dfu.put", "offset": offset, "length": len(data), "status": md5_hex(data)}
        if binary:
            self.client.binary_put(data)
            req["binary"] = True
        else:
            req["payload"] = base64.b64encode(data).decode()
        return self.client.request(req)

    def _wait_written(self, rsp: dict[str, Any]) -> None:
        deadline = time.monotonic() + self.options.pending_timeout
        while rsp.get("pending") is True:
            if time.monotonic() > deadline:
                raise CardError(f"the Notecard was still writing after {self.options.pending_timeout:g} s",
                                code="E_CARD_ERROR")
            stopping.sleep(self.options.pending_poll)
            rsp = self.client.request({"req": "dfu.put"})

    # ------------------------------------------------------------ after
    def _check_offered(self, result: SideloadResult) -> None:
        """The card must now offer this very image, as Notehub-delivered images are offered."""
        self.events.step("verify", "checking that the Notecard offers the image")
        status = self.client.request({"req": "dfu.status", "name": "user"})
        if status.get("mode") != "ready":
            raise CardError(f"the Notecard did not accept the image: dfu.status mode {status.get('mode')!r}, "
                            f"{str(status.get('status', ''))[:200]!r}", code="E_SIDELOAD_REJECTED")
        try:
            offered = ImageInfo.from_body(status.get("body"))
        except NotedfuError as exc:
            raise CardError(f"after the side-load: {exc.message}", code="E_SIDELOAD_REJECTED") from exc
        if (offered.length, offered.md5) != (result.length, result.md5):
            raise IntegrityError(f"the Notecard offers {offered.length} bytes, md5 {offered.md5}, not what was "
                                 "side-loaded", code="E_IMAGE_MD5")
