"""The download engine: from ``dfu.status`` ready to a verified image on disk.

Sequence (design §2): ``dfu.status`` → ``hub.get`` (remember the mode) →
``hub.set mode:dfu`` → ``dfu.get length:0`` until ready → ``dfu.get`` chunks
(binary when the card offers it, base64 otherwise), each checked against its
md5 and fsynced with its journal entry → whole-image length, MD5 and CRC-32 →
the card handed back in the mode it was found in, on every path.
"""

from __future__ import annotations

import binascii
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from notedfu.checksums import file_digests, is_md5, md5_hex
from notedfu.errors import (BadResponseError, Cancelled, CardRequestError, ChunkRefused, DfuModeLost,
                            DfuNotReady, IntegrityError, LinkError, NoImage, NotedfuError, NotReadyError,
                            NotSupported)
from notedfu.events import Events
from notedfu.notecard.chunk_loop import Adjusted, ChunkLoop
from notedfu.notecard.chunksize import DEFAULT_CHUNK, MIN_CHUNK, ChunkSizes
from notedfu.notecard.client import CardClient
from notedfu.notecard.mode import CardMode
from notedfu.notecard.staging import Journal, Staging

MAX_IMAGE_BYTES = 16 * 1024 * 1024  # the Notecard holds ≤ 1.5 MB; anything near this is a lie
CHUNK_RETRIES_PER_REQUEST = 2  # the request layer's own retries for a data chunk (the chunk loop retries too)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
_SIZE_WORDS = re.compile(r"length|size|chunk|too (large|big|long)|exceed|incomplete", re.IGNORECASE)


def _display(value: Any, limit: int = 200) -> str:
    """Card-supplied text made safe to print (never used as a path)."""
    return _UNPRINTABLE.sub("?", str(value))[:limit] if value is not None else ""


def is_size_refusal(exc: NotedfuError, probing: bool) -> bool:
    """Whether a failed ``dfu.get`` says the chunk was too large.

    While probing a larger size, any error answer or lost/incomplete answer
    counts (the one request the probe may cost). At a size the card took
    before, only an answer that speaks of the length does.
    """
    if isinstance(exc, (DfuModeLost, DfuNotReady, NotSupported)):
        return False
    if isinstance(exc, CardRequestError):
        return probing or isinstance(exc, ChunkRefused) or bool(_SIZE_WORDS.search(exc.err))
    return probing and isinstance(exc, LinkError)


@dataclass(frozen=True)
class ImageInfo:
    """The image the card offers, validated."""

    length: int
    md5: str
    crc32: int
    name: str = ""
    source: str = ""
    version: str = ""
    notes: str = ""

    @classmethod
    def from_body(cls, body: Any, max_length: int = MAX_IMAGE_BYTES) -> "ImageInfo":
        """Check the ``body`` of ``dfu.status``; raise ``BadResponseError`` on anything off."""
        if not isinstance(body, dict):
            raise BadResponseError("dfu.status: ready but no image metadata", code="E_IMAGE_META")
        length, md5, crc = body.get("length"), body.get("md5"), body.get("crc32")
        # Metadata that cannot describe an image will not get better by asking again: permanent.
        if not isinstance(length, int) or isinstance(length, bool) or not 0 < length <= max_length:
            raise BadResponseError(f"dfu.status: image length {length!r} is not in 1..{max_length}",
                                   code="E_IMAGE_META", permanent=True)
        if not is_md5(md5, any_case=True):
            raise BadResponseError(f"dfu.status: image md5 {_display(md5, 40)!r} is not 32 hex digits",
                                   code="E_IMAGE_META", permanent=True)
        if not isinstance(crc, int) or isinstance(crc, bool) or not 0 <= crc <= 0xFFFFFFFF:
            raise BadResponseError(f"dfu.status: image crc32 {_display(crc, 40)!r} is not a 32-bit number",
                                   code="E_IMAGE_META", permanent=True)
        info = body.get("info")
        version = info.get("version") if isinstance(info, dict) else None
        return cls(length, md5.lower(), crc, _display(body.get("name")), _display(body.get("source")),
                   _display(version, 64) if isinstance(version, str) else "", _display(body.get("notes")))


@dataclass
class FetchOptions:
    """Knobs of the download engine."""

    chunk: int | None = None  # the largest chunk to ask for (default: what this card is known to take)
    ready_timeout: float = 120.0  # how long DFU mode may take to become active
    # Between dfu.get length:0 probes (Blues examples: 2.5 s, note-cli: 1.5 s). A probe and its answer are
    # ~190 bytes, 0.2 s of a 9600-baud link: once a second answers within 1 s of DFU mode and keeps the
    # link mostly idle (half the probes of the 0.5 s this was).
    ready_poll: float = 1.0
    renew_seconds: float = 600.0  # re-send hub.set dfu this often (the card drops DFU mode after 15 min)
    retries: int = 5  # tries per chunk before giving up
    state_root: Path | None = None  # where per-card chunk sizes are remembered (default: the staging root)
    max_image: int = MAX_IMAGE_BYTES
    binary: bool | None = None  # None: use binary when the card offers it (detected)
    cancelled: Callable[[], bool] = lambda: False  # a cancel token, asked at each stage and chunk


@dataclass
class FetchResult:
    """What a fetch did."""

    path: Path
    image: ImageInfo
    resumed_from: int = 0
    chunks: int = 0
    chunk_size: int = 0
    refused_sizes: list[int] = field(default_factory=list)
    binary: bool = False
    seconds: float = 0.0
    card_mode: str = ""
    already_staged: bool = False
    retried_chunks: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


class Download:
    """One download of the image the card offers, as stages the caller drives (and records):
    :meth:`enter`, :meth:`transfer`, :meth:`verify`, and :meth:`hand_back` in a ``finally``.

    The cancel token is checked as each stage begins and before every chunk; ``result.already_staged``
    means the image is on disk, verified, and none of the stages has anything to do."""

    def __init__(self, engine: Downloader, journal: Journal, result: FetchResult) -> None:
        self.engine = engine
        self.journal = journal
        self.result = result
        self.entered = False  # the card's mode was saved and DFU mode asked for: it must be handed back
        self._saved: str | None = None

    @property
    def image(self) -> ImageInfo:
        """What the card offers."""
        return self.result.image

    def enter(self) -> None:
        """Save the card's mode (on disk first), switch it to DFU mode and wait until it is active."""
        engine = self.engine
        engine._stop_if_cancelled()
        self._saved, self.entered = engine.mode.remember(), True
        engine.events.step("enter_dfu", "switching the Notecard to DFU mode")
        engine._enter_dfu()

    def transfer(self) -> None:
        """Read every chunk not yet verified, each checked and fsynced with its journal entry."""
        self.engine._stop_if_cancelled()
        self.engine.events.step("transfer", "reading the image from the Notecard", percent=0.0,
                                done=self.journal.verified, total=self.image.length)
        self.engine._transfer(self.journal, self.result)

    def verify(self) -> Path:
        """The whole image against its length, MD5 and CRC-32; on a mismatch the whole image is read once
        more before the card's copy is called bad (which costs a new download from Notehub)."""
        engine, image = self.engine, self.image
        engine._stop_if_cancelled()
        engine.events.step("verify", "verifying length, MD5 and CRC-32")
        try:
            self.result.path = engine._verify(self.journal)
        except IntegrityError as exc:
            if self.journal.rereads:
                raise
            engine.events.message(f"{exc.message}: reading the whole image from the Notecard again", "warning")
            self.journal = engine.staging.journal(image.md5, image.length, image.crc32, source=image.source,
                                                  version=image.version, rereads=self.journal.rereads + 1)
            engine.events.step("transfer", "reading the image from the Notecard again", percent=0.0,
                               done=0, total=image.length)
            engine._transfer(self.journal, self.result)
            engine.events.step("verify", "verifying length, MD5 and CRC-32")
            self.result.path = engine._verify(self.journal)
        return self.result.path

    def hand_back(self) -> str:
        """Put the card back in the mode it was found in (once; never raises: see ``CardMode.hand_back``)."""
        if not self.entered:
            return self.result.card_mode
        self.entered = False
        self.engine.events.step("exit_dfu", "handing the Notecard back")
        self.result.card_mode = self.engine.mode.hand_back(self._saved)
        return self.result.card_mode


class Downloader:
    """Fetches the image the Notecard holds into the staging directory."""

    def __init__(self, client: CardClient, staging: Staging, events: Events | None = None,
                 options: FetchOptions | None = None) -> None:
        self.client = client
        self.staging = staging
        self.events = events or Events()
        self.options = options or FetchOptions()
        self.mode = CardMode(client, staging, self.events)
        if staging.warn is None:
            staging.warn = lambda text: self.events.message(text, "warning")

    # ------------------------------------------------------------ public
    def dfu_status(self) -> dict[str, Any]:
        """The card's host-DFU status (``dfu.status name:user``)."""
        return self.client.request({"req": "dfu.status", "name": "user"})

    def begin(self, status: dict[str, Any] | None = None) -> Download:
        """Look at what the card offers (``dfu.status``, the image's metadata checked; ``status`` if the
        caller has just asked) and open its journal; nothing is changed on the card. The :class:`Download`
        it returns runs the stages one at a time."""
        self.events.step("check", "checking the Notecard")
        status = status or self.dfu_status()
        mode = status.get("mode")
        if mode != "ready":
            self.mode.repair()
            if mode == "downloading":
                raise NotReadyError(f"the Notecard is still downloading the image ({_display(status.get('status'))})",
                                    code="E_DOWNLOADING")
            raise NoImage(f"no image ready on the Notecard (dfu.status mode {_display(mode)!r})")
        image = ImageInfo.from_body(status.get("body"), self.options.max_image)
        journal = self.staging.journal(image.md5, image.length, image.crc32, source=image.source,
                                       version=image.version)
        result = FetchResult(path=self.staging.paths(image.md5)[2], image=image, resumed_from=journal.verified)
        if journal.complete:
            result.card_mode = self.mode.repair() or ""
            result.already_staged = True
            self.events.message(f"image {image.md5} is already staged and verified")
        return Download(self, journal, result)

    def fetch(self) -> FetchResult:
        """Download, verify and stage the image the card offers: every stage, the card handed back on every
        path."""
        started = time.monotonic()
        download = self.begin()
        if download.result.already_staged:
            return download.result
        try:
            download.enter()
            download.transfer()
            download.verify()
        finally:
            download.hand_back()
        download.result.seconds = time.monotonic() - started
        return download.result

    def _stop_if_cancelled(self) -> None:
        """The cancel token: raised inside the ``try`` whose ``finally`` hands the card back."""
        if self.options.cancelled():
            raise Cancelled("cancelled on request before the target was touched")

    def _enter_dfu(self) -> None:
        self.mode.wait_until_ready({"req": "dfu.get", "length": 0}, self.options.ready_timeout,
                                   self.options.ready_poll)

    # ------------------------------------------------------------ transfer
    def _chunk_sizes(self, remaining: int, capacity: int) -> ChunkSizes:
        """This card's remembered chunk sizes, keyed by its device UID (``card.version``); for what one
        default-sized request reads whole (a delta update file), none: no 357-byte card.version for it."""
        if remaining <= min(DEFAULT_CHUNK, capacity or DEFAULT_CHUNK):
            return ChunkSizes(None, "")
        uid = self.client.request({"req": "card.version"}).get("device")
        return ChunkSizes(self.options.state_root or self.staging.root, uid if isinstance(uid, str) else "")

    def _transfer(self, journal: Journal, result: FetchResult) -> None:
        capacity = 0 if self.options.binary is False else self.client.binary_capacity()
        binary = capacity > 0
        sizes = self._chunk_sizes(journal.length - journal.verified, capacity)
        encoding = "binary" if binary else "base64"
        chunk = sizes.good(encoding, capacity or None)
        probe = sizes.probe(encoding, capacity or None)
        if self.options.chunk:
            chunk, probe = min(chunk, self.options.chunk), None

        def step(offset: int) -> int:
            """One chunk read, checked and written to the staging file; a refused size or a card without
            binary ``dfu.get`` adjusts how the next try reads (remembered for this card)."""
            nonlocal binary, encoding, chunk, probe
            probing = probe is not None and journal.length - offset >= probe
            length = min(probe if probing else chunk, journal.length - offset)
            try:
                data, binary = self._get_chunk(offset, length, binary, probing)
            except (CardRequestError, LinkError) as exc:
                if is_size_refusal(exc, probing) and length > MIN_CHUNK:
                    chunk = sizes.refused(encoding, length)
                    result.refused_sizes.append(length)
                    probe = None
                    self.events.message(f"the Notecard refused {length}-byte chunks ({exc.message}); "
                                        f"using {chunk} (remembered for this card)", "warning")
                    raise Adjusted from exc
                if isinstance(exc, NotSupported) and binary:
                    binary, encoding = False, "base64"
                    chunk, probe = sizes.good(encoding), None
                    raise Adjusted from exc
                raise
            if probing:
                sizes.took(encoding, length)
                chunk, probe = length, sizes.probe(encoding, capacity or None)
            self.staging.write_chunk(fd, journal, offset, data)
            result.chunks += 1
            return length

        loop = ChunkLoop(self.events, self.mode, "reading the image from the Notecard", self.options.retries,
                         self._enter_dfu, self._stop_if_cancelled, self.options.renew_seconds)
        fd = self.staging.open_part(journal)
        try:
            loop.run(journal.verified, journal.length, step)
        finally:
            os.close(fd)
            result.retried_chunks += loop.retried
        result.chunk_size = chunk
        result.binary = binary

    def _get_chunk(self, offset: int, length: int, binary: bool, probing: bool = False) -> tuple[bytes, bool]:
        """One verified chunk; also says whether the card really answered in binary.

        A probe of a larger size is sent once: its failure is the answer.
        """
        req: dict[str, Any] = {"req": "dfu.get", "offset": offset, "length": length}
        if binary:
            req["binary"] = True
        rsp = self.client.request(req, retries=0 if probing else CHUNK_RETRIES_PER_REQUEST)
        status = rsp.get("status")
        if not is_md5(status, any_case=True):
            raise BadResponseError("dfu.get: no md5 status for the chunk", code="E_BAD_RESPONSE")
        status = status.lower()
        if "payload" in rsp:  # base64: older firmware ignores "binary"
            payload = rsp["payload"]
            if not isinstance(payload, str):
                raise BadResponseError("dfu.get: payload is not a string", code="E_BAD_RESPONSE")
            try:
                data = binascii.a2b_base64(payload, strict_mode=True)
            except (binascii.Error, ValueError) as exc:
                raise IntegrityError(f"dfu.get: payload is not valid base64 ({exc})", code="E_CHUNK_ENCODING") from exc
            binary = False
        elif binary and "cobs" in rsp:
            data = self.client.binary_get(length, expected_md5=status)
        else:
            raise BadResponseError("dfu.get: answer has neither payload nor binary data", code="E_BAD_RESPONSE")
        if len(data) != length:
            raise IntegrityError(f"dfu.get: got {len(data)} bytes, asked for {length}", code="E_CHUNK_LENGTH")
        if md5_hex(data) != status:
            raise IntegrityError("dfu.get: chunk does not match its md5", code="E_CHUNK_MD5")
        return data, binary

    # ------------------------------------------------------------ verify
    def _verify(self, journal: Journal) -> Path:
        part = self.staging.paths(journal.md5)[0]
        with open(part, "rb") as stream:
            md5, crc, have = file_digests(stream, journal.length)
        problem = None
        if have != journal.length:
            problem = ("E_IMAGE_LENGTH", f"staged image has {have} bytes, the Notecard said {journal.length}")
        elif md5 != journal.md5:
            problem = ("E_IMAGE_MD5", f"image MD5 {md5} does not match the Notecard's {journal.md5}")
        elif crc != journal.crc32:
            problem = ("E_IMAGE_CRC32", f"image CRC-32 {crc:08x} does not match the Notecard's {journal.crc32:08x}")
        if problem:
            self.staging.discard(journal.md5)  # every chunk matched yet the whole does not: start over
            # The second time (after one complete re-read) the card's copy is bad: only Notehub can fix it.
            raise IntegrityError(problem[1], code=problem[0], permanent=journal.rereads > 0)
        return self.staging.complete(journal)
