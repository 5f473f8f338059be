"""The simulated Notecard's side-load requests: ``dfu.put`` and ``card.binary.put`` (the host giving the card
an image, as note-cli's ``dfu.go`` does), and ``card.time``."""

from __future__ import annotations

import base64
import time
from typing import Any

from notedfu.checksums import crc32, is_md5, md5_hex
from notedfu.protocol.cobs import CobsError, cobs_decode
from notedfu.sim.card_config import BINARY_MAX, DFU_STORAGE, ERR_NOT_DFU, ERR_NOT_READY, SIDELOAD_CHUNK, Reply


class SideloadRequests:
    """Mixed into :class:`notedfu.sim.notecard.NotecardSim`: the requests that carry an image to the card."""

    def _req_card_binary_put(self, req: dict, now: float) -> dict | Reply:
        if not self.config.binary:
            return {"err": "unknown request: card.binary.put {io}{not-supported}"}
        size, offset = req.get("cobs"), req.get("offset", 0)
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= 2 * BINARY_MAX:
            return {"err": "card.binary.put: cobs must be the encoded length {bad-bin}"}
        if not isinstance(offset, int) or offset != (len(self.binary_store) if offset else 0):
            return {"err": "card.binary.put: offset must be where the binary store ends {bad-bin}"}
        self._binary_put = {"offset": offset, "status": req.get("status")}
        reply = self._reply({})
        reply.binary_follows = size + 1
        return reply

    def receive_binary(self, wire: bytes) -> None:
        """The raw bytes announced by ``card.binary.put``: COBS data and its newline."""
        put, self._binary_put = self._binary_put, {}
        self.binary_error = ""
        try:
            if not wire.endswith(b"\n"):
                raise CobsError("the data does not end where announced")
            data = cobs_decode(wire[:-1])
        except CobsError as exc:
            self.binary_store, self.binary_error = b"", f"binary data is not valid COBS ({exc})"
            return
        if isinstance(put.get("status"), str) and md5_hex(data) != put["status"]:
            self.binary_store, self.binary_error = b"", "binary data does not match its md5"
            return
        if put.get("offset", 0) + len(data) > BINARY_MAX:
            self.binary_store, self.binary_error = b"", "binary data exceeds the binary store"
            return
        self.binary_store = self.binary_store[:put.get("offset", 0)] + data

    def _req_card_time(self, req: dict, now: float) -> dict:
        if isinstance(req.get("time"), int) and not self.time_set:
            self.time_set = True  # the time can be set once, while the card has none
        if not self.time_set:
            return {"zone": "UTC,Unknown"}
        return {"time": int(time.time()), "zone": "UTC,Unknown", "minutes": 0}

    def _req_dfu_put(self, req: dict, now: float) -> dict | Reply:
        if self.hub_mode != "dfu":
            return {"err": ERR_NOT_DFU}
        if not self._storage_ready(now):
            return {"err": ERR_NOT_READY}
        if "body" in req:
            return self._sideload_begin(req["body"])
        if "offset" in req or "length" in req:
            return self._sideload_chunk(req, now)
        return {"pending": True} if now < self.put_busy_until else {}

    def _sideload_begin(self, body: Any) -> dict:
        if not self.time_set:
            return {"err": "dfu.put: the card's time is not set (card.time) {no-time}"}
        if not isinstance(body, dict):
            return {"err": "dfu.put: body must be an object {bad-body}"}
        length, md5, crc = body.get("length"), body.get("md5"), body.get("crc32")
        if not isinstance(length, int) or isinstance(length, bool) or not 0 < length <= DFU_STORAGE:
            return {"err": f"dfu.put: length must be 1..{DFU_STORAGE} {{bad-body}}"}
        if not is_md5(md5):
            return {"err": "dfu.put: md5 must be 32 lowercase hex digits {bad-body}"}
        if not isinstance(crc, int) or isinstance(crc, bool) or not 0 <= crc <= 0xFFFFFFFF:
            return {"err": "dfu.put: crc32 must be a 32-bit number {bad-body}"}
        self.sideload = dict(body)
        self.sideload_data = bytearray()
        # The image being replaced is gone, as on a card whose DFU storage is rewritten.
        self.image, self.meta, self.dfu_state, self.dfu_status_text = None, {}, "downloading", "side-loading"
        rsp: dict[str, Any] = {"length": SIDELOAD_CHUNK}  # hosts with card.binary send more (note-cli)
        if self.config.snappy:
            rsp["mode"] = "snappy"
        return rsp

    def _sideload_chunk(self, req: dict, now: float) -> dict:
        if self.sideload is None:
            return {"err": "dfu.put: no side-load in progress (send the body first) {dfu-not-started}"}
        offset, length = req.get("offset"), req.get("length")
        if not isinstance(offset, int) or not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            return {"err": "dfu.put: offset and length must be integers"}
        if not 0 <= offset <= len(self.sideload_data) or offset + length > self.sideload["length"]:
            return {"err": f"dfu.put: offset {offset} does not continue the {len(self.sideload_data)} bytes "
                           "received {dfu-offset}"}
        if req.get("binary") is True:
            data = self.binary_store
        else:
            try:
                data = base64.b64decode(req.get("payload", ""), validate=True)
            except (ValueError, TypeError):
                return {"err": "dfu.put: payload is not valid base64"}
        if len(data) != length:
            return {"err": f"dfu.put: {len(data)} bytes received, length says {length}"}
        if req.get("status") != md5_hex(data):
            return {"err": "dfu.put: the data does not match its md5 status"}
        del self.sideload_data[offset:]
        self.sideload_data += data
        if len(self.sideload_data) < self.sideload["length"]:
            return {}
        self._sideload_complete()
        self.put_busy_until = now + self.request_latency  # moving the image into place
        return {"pending": True}

    def _sideload_complete(self) -> None:
        body, data = self.sideload or {}, bytes(self.sideload_data)
        self.sideload, self.sideload_data = None, bytearray()
        if md5_hex(data) != body.get("md5") or crc32(data) != body.get("crc32"):
            self.dfu_state, self.dfu_status_text = "error", "side-loaded image does not match its md5/crc32"
            return
        self.stage(data, str(body.get("source") or body.get("name") or "sideload.bin"))
