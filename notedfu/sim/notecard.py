"""A simulated Notecard: the JSON request engine behind every simulated link.

``NotecardSim.handle(line, now)`` takes one request line exactly as it came off
the wire and returns the bytes the card sends back plus the card time it took.
It knows nothing of ports or sleeping; :mod:`notedfu.sim.cardport` puts it on
a byte stream with the timing model, and :mod:`notedfu.sim.i2c` on a bus.

Behaviour follows the Notecard API reference (``dfu.status``, ``hub.set``,
``dfu.get``, ``card.binary``) and what note-c / note-python expect on the wire
(the ``"crc":"SSSS:CCCCCCCC"`` field, ``\\r\\n``-terminated responses). Side-loading
(``dfu.put``, ``card.binary.put``, ``card.time``) follows what Blues' note-cli
sends for ``notecard -sideload``: a ``body`` with the image's metadata, then
chunks at increasing offsets (base64 ``payload``, or ``binary:true`` after a
``card.binary.put``), each with the md5 of its bytes as ``status``.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from notedfu.checksums import crc32, md5_hex
from notedfu.specs import check_option_names
from notedfu.protocol.cobs import cobs_encode
from notedfu.protocol.firmware import firmware_info
from notedfu.protocol.notecard import add_crc, check_crc
from notedfu.sim.clock import WALL, Clock
from notedfu.sim.card_config import (BINARY_MAX, CARD_OPTIONS, DEFAULT_HUB_MODE, ERR_NOT_DFU, ERR_NOT_READY,
                                     FIRMWARES, HUB_MODES, REFUSALS, Reply, SimConfig)
from notedfu.sim.card_faults import CardFaults
from notedfu.sim.card_sideload import SideloadRequests
from notedfu.sim.faults import DATA_FAULTS, Fault
from notedfu.sim.timing import PROFILES, LinkProfile, profile

class NotecardSim(SideloadRequests, CardFaults):
    """The card's state and its answers to requests."""

    def __init__(self, config: SimConfig | None = None, link: LinkProfile | None = None,
                 clock: Clock = WALL, state_clock: Callable[[], float] | None = None) -> None:
        """``clock``: the wire's time (the servers carrying the card's bytes read it); ``state_clock``: the
        card's own timers' (Notehub's download, DFU mode coming up and timing out). A test moves either."""
        self.config = config or SimConfig()
        self.link = link or PROFILES["usb"]
        self.request_latency = self.link.request_latency
        self.read_seconds_per_kib = self.link.read_seconds_per_kib
        self.clock = clock
        self.state_clock = state_clock
        self.hub_mode = self.config.hub_mode
        self.mode_before_dfu = self.hub_mode
        self.dfu_entered_at = 0.0
        self.dfu_renewed_at = 0.0
        self.storage_ready_at: float | None = None  # when the DFU storage power-up under way completes
        self.dfu_on = True
        self.vvalue: str | None = None
        self.card_dfu: dict[str, Any] = {}
        self.binary_store = b""
        self.binary_error = ""  # why the last card.binary.put was rejected ({bad-bin})
        self._binary_put: dict[str, Any] = {}
        self.time_set = self.config.clock_set  # card.time answers with the time once it has one
        self.sideload: dict[str, Any] | None = None  # metadata of an image being received by dfu.put
        self.sideload_data = bytearray()
        self.put_busy_until = 0.0
        self.image: bytes | None = None
        self.meta: dict[str, Any] = {}
        self.dfu_state = "idle"
        self.dfu_status_text = ""
        self.download_started = 0.0
        self.reports: list[dict[str, Any]] = []  # what the host told Notehub, for tests and the demo summary
        self.host_version: Any = None
        self.wire_bytes = 0  # every byte over the link, both ways, all connections (counted by CardPort)
        self.requests: dict[str, int] = {}
        self.data_requests = 0
        self.served: bytearray = bytearray()
        self.restarts = 0
        self._armed: Fault | None = None
        self._seq: int | None = None
        self._id: int | None = None
        self.warnings: dict[str, int] = {}  # protocol warnings (host pacing), with how often each happened
        if self.config.image is not None:
            self.stage(self.config.image, self.config.image_name, self.config.download_seconds)

    # ----------------------------------------------------------- Notehub side
    def stage(self, image: bytes, name: str = "firmware.bin", download_seconds: float = 0.0,
              now: float | None = None) -> None:
        """Deliver ``image`` as Notehub would: downloading for a while, then ready."""
        now = self._now(now)
        created = int(time.time())
        stem = name.rsplit(".", 1)
        stamped = f"{stem[0]}${time.strftime('%Y%m%d%H%M%S', time.gmtime(created))}" + (
            f".{stem[1]}" if len(stem) == 2 else "")
        self.image = bytes(image)
        self.served = bytearray(len(image))
        self.meta = {
            "crc32": crc32(image), "created": created, "info": firmware_info(image),
            "length": len(image), "md5": md5_hex(image), "modified": created, "name": stamped,
            "notes": "staged by the notedfu simulator", "source": name, "type": "firmware",
        }
        self.download_started = now
        self.config.download_seconds = download_seconds
        self.dfu_state = "downloading" if download_seconds > 0 else "ready"

    def bytes_served_more_than_once(self) -> int:
        """How many image bytes ``dfu.get`` has sent more than once."""
        return sum(1 for count in self.served if count > 1)

    def _now(self, now: float | None) -> float:
        if self.state_clock is not None:
            return self.state_clock()
        return self.clock() if now is None else now

    # ------------------------------------------------------------ the wire
    def handle(self, line: bytes, now: float | None = None) -> Reply:
        """Answer one request line (without its newline); ``now`` is when it arrived (the port's clock)."""
        now = self._now(now)
        line = line.rstrip(b"\r")
        if not line.strip():
            return Reply(b"\r\n")  # note-python's and note-c's reset handshake
        body, seq, crc_ok = check_crc(line)
        self._id = None
        if not crc_ok:
            return self._error("crc mismatch on request {io}", seq)
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._error("invalid JSON request {io}", None)
        name = req.get("req") or req.get("cmd")
        if not isinstance(name, str):
            return self._error("no request name {io}", None)
        self.requests[name] = self.requests.get(name, 0) + 1
        self._expire(now)
        self._seq = seq
        self._id = req.get("id") if isinstance(req.get("id"), int) and not isinstance(req.get("id"), bool) else None
        fault = self._named_fault(name)
        if (cut := self._fault_before_request(fault)) is not None:
            return cut
        handler = getattr(self, "_req_" + name.replace(".", "_"), None)
        if fault == "io":
            result: dict | Reply = {"err": f"{name}: I/O error {{io}}"}
        elif handler is None:
            result = {"err": f"unknown request: {name} {{io}}{{not-supported}}"}
        else:
            result = handler(req, now)
        if "cmd" in req:  # commands get no answer
            return Reply(b"", self.request_latency)
        reply = result if isinstance(result, Reply) else self._reply(result)
        return self._damage(reply, fault)

    def _reply(self, rsp: dict[str, Any], card_seconds: float | None = None, tail: bytes = b"") -> Reply:
        """Serialise ``rsp`` with the request's ``id`` echoed and the request's crc.

        Errors carry the crc too: note-c ignores it there, but note-python,
        once it has seen a crc, treats any answer without one as corrupt.
        """
        if self._id is not None:
            rsp = {**rsp, "id": self._id}
        text = json.dumps(rsp, separators=(",", ":"))
        if self._seq is not None:
            text = add_crc(text, self._seq)
        seconds = self.request_latency if card_seconds is None else card_seconds
        return Reply(text.encode() + b"\r\n", seconds, tail=tail)

    def _error(self, message: str, seq: int | None) -> Reply:
        self._seq = seq
        return self._reply({"err": message})

    def warn(self, text: str) -> None:
        """Note a protocol warning: something a host did that Blues' libraries never do."""
        self.warnings[text] = self.warnings.get(text, 0) + 1

    # ------------------------------------------------------------ state
    def _expire(self, now: float) -> None:
        if self.hub_mode == "dfu" and now - self.dfu_renewed_at > self.config.dfu_timeout:
            self.hub_mode = self.mode_before_dfu
        if (self.dfu_state == "downloading" and self.sideload is None
                and now - self.download_started >= self.config.download_seconds):
            self.dfu_state = "ready"

    def _storage_ready(self, now: float) -> bool:
        """Whether DFU mode is fully active: the storage power-up since the first hub.set dfu is done.

        Blues: "Depending on in-progress communications on the Notecard, it may
        take up to 30 seconds after setting the device to dfu mode before it is
        ready" — the delay is the card's own activity, not a fixed cost of every
        hub.set, so it runs on the card's clock from the first request.
        """
        return self.storage_ready_at is not None and now >= self.storage_ready_at

    def restart(self) -> None:
        """Reboot: DFU mode, the binary store and the powered storage do not survive."""
        self.restarts += 1
        self.storage_ready_at = None
        if self.hub_mode == "dfu":
            self.hub_mode = self.mode_before_dfu
        self.binary_store = b""
        self._armed = None
        self.sideload = None  # a side-load in progress must start again

    @property
    def ready_delay(self) -> float:
        """Seconds DFU mode needs to become active (the config's, else the link profile's)."""
        return self.link.ready_delay if self.config.ready_delay is None else self.config.ready_delay

    # ------------------------------------------------------------ requests
    def _req_hub_get(self, req: dict, now: float) -> dict:
        return {"mode": self.hub_mode, "device": "dev:000000000000000", "product": "com.example:notedfu",
                "sn": "notedfu-sim"}

    def _req_hub_set(self, req: dict, now: float) -> dict:
        mode = req.get("mode")
        if mode is None:
            return {}
        if mode == "dfu":
            if self.hub_mode != "dfu":
                self.mode_before_dfu = self.hub_mode
                self.dfu_entered_at = now
                self.hub_mode = "dfu"
                if self.storage_ready_at is None:
                    # Powering the modem and external storage for DFU takes the card a while; it
                    # finishes what it started even if the host leaves DFU mode meanwhile, so a
                    # host that comes back later finds the storage ready (see _storage_ready).
                    self.storage_ready_at = now + self.ready_delay
            self.dfu_renewed_at = now
        elif self.hub_mode == "dfu" and self._stuck_in_dfu():
            return {"err": "hub.set: cannot leave DFU mode: external storage busy {io}"}
        elif mode == "dfu-completed":
            if self.hub_mode == "dfu":
                self.hub_mode = self.mode_before_dfu
        elif mode == "-":
            self.hub_mode = DEFAULT_HUB_MODE
        elif mode in HUB_MODES:
            self.hub_mode = mode
        else:
            return {"err": f"unknown mode: {mode}"}
        return {}

    def _req_dfu_status(self, req: dict, now: float) -> dict:
        if req.get("name", "user") == "card":
            return {"mode": "idle", "on": True}
        if req.get("on") is True:
            self.dfu_on = True
        if req.get("off") is True:
            self.dfu_on = False
        if isinstance(req.get("vvalue"), str):
            self.vvalue = req["vvalue"]
        if "version" in req:
            self.host_version = req["version"]
            self.reports.append({"version": req["version"]})
        if req.get("stop") is True:
            report = {k: req[k] for k in ("status", "err") if k in req}
            self.reports.append({"stop": True, **report})
            self.image, self.meta, self.binary_store = None, {}, b""
            self.dfu_state = "error" if "err" in req else "completed"
            self.dfu_status_text = str(req.get("err") or req.get("status") or "")
        rsp: dict[str, Any] = {"mode": self.dfu_state, "on": self.dfu_on}
        if self.vvalue:
            rsp["vvalue"] = self.vvalue
        if self.dfu_state == "downloading" and self.image is not None:
            done = int(len(self.image) * min(1.0, (now - self.download_started) / self.config.download_seconds))
            rsp["status"] = f"downloaded {done * 100 // len(self.image)}% ({done}/{len(self.image)})"
            rsp["pending"] = True
        elif self.dfu_state == "ready":
            rsp["status"] = "successfully downloaded"
            rsp["body"] = self.meta
        elif self.dfu_status_text:
            rsp["status"] = self.dfu_status_text
        return rsp

    def _req_dfu_get(self, req: dict, now: float) -> dict | Reply:
        if self.hub_mode != "dfu":
            return {"err": ERR_NOT_DFU}
        if not self._storage_ready(now):
            return {"err": ERR_NOT_READY}
        if self.dfu_state != "ready" or self.image is None:
            return {"err": "no host firmware image is available {dfu-dl}"}
        length, offset = req.get("length", 0), req.get("offset", 0)
        if not isinstance(length, int) or not isinstance(offset, int) or isinstance(length, bool):
            return {"err": "dfu.get: offset and length must be integers"}
        if length == 0:
            return {"payload": ""}
        if length > self.config.max_chunk:
            return self._refuse(length)
        if length < 0 or offset < 0 or offset + length > len(self.image):
            return {"err": f"dfu.get: offset {offset} length {length} outside the image ({len(self.image)}) "
                           "{dfu-total-length}"}

        self.data_requests += 1
        fault = self._take_fault()
        if fault == "restart":
            self.restart()
            return Reply(b"", self.request_latency, restarted=True)
        if fault == "io":
            return {"err": "error reading DFU storage {io}"}

        chunk = self.image[offset:offset + length]
        for i in range(offset, offset + length):
            if self.served[i] < 255:
                self.served[i] += 1
        read_seconds = self.request_latency + self.read_seconds_per_kib * length / 1024
        if self.config.dfu_binary and req.get("binary") is True:
            self.binary_store = chunk
            self._armed = Fault(fault) if fault in DATA_FAULTS else None
            rsp = {"cobs": len(cobs_encode(chunk)), "length": length, "status": md5_hex(chunk)}
            reply = self._reply(rsp, card_seconds=read_seconds)
        else:
            rsp = self._data_response(chunk, fault, base64_payload=True)
            if offset == 0:
                rsp["body"] = self.meta
            reply = self._reply(rsp, card_seconds=read_seconds)
        return self._damage(reply, fault)

    def _req_card_binary(self, req: dict, now: float) -> dict:
        if not self.config.binary:
            return {"err": "unknown request: card.binary {io}{not-supported}"}
        if req.get("delete") is True or req.get("reset") is True:  # note-c sends reset:true at offset 0
            self.binary_store, self.binary_error = b"", ""
        if self.binary_error:
            # note-c's NoteBinaryStoreTransmit swallows {bad-bin} and still reads "max" from the answer.
            return {"err": f"{self.binary_error} {{bad-bin}}", "max": BINARY_MAX}
        rsp: dict[str, Any] = {"max": BINARY_MAX}
        if self.binary_store:
            rsp.update(length=len(self.binary_store), cobs=len(cobs_encode(self.binary_store)),
                       status=md5_hex(self.binary_store))
        return rsp

    def _req_card_binary_get(self, req: dict, now: float) -> dict | Reply:
        if not self.config.binary:
            return {"err": "unknown request: card.binary.get {io}{not-supported}"}
        if not self.binary_store:
            return {"err": "no binary data is available {bad-bin}"}
        offset = req.get("offset", 0)
        length = req.get("length", len(self.binary_store) - offset)
        if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0 \
                or offset + length > len(self.binary_store):
            return {"err": "card.binary.get: offset/length outside the binary store {bad-bin}"}
        fault = self._armed.kind if self._armed else None
        self._armed = None
        chunk = self.binary_store[offset:offset + length]
        status = md5_hex(chunk)
        if fault == "md5":
            status = md5_hex(chunk + b"!")
        if fault == "truncate":
            chunk = chunk[: len(chunk) // 2]
        encoded = cobs_encode(chunk)
        if fault == "badb64":  # the binary twin of bad base64: a zero byte inside COBS data
            encoded = bytes([encoded[0] ^ 0x7F]) + encoded[1:]
        reply = self._reply({"status": status, "cobs": len(encoded)}, tail=encoded + b"\n")
        if fault == "nonewline":
            reply.tail = reply.tail[:-1]
            return reply
        return self._damage(reply, fault)

    def _refuse(self, length: int) -> Reply:
        """A dfu.get longer than this card serves, refused the way this card refuses it."""
        form = self.config.refusal
        if form == "cutoff":
            text = self._reply({"payload": "A" * 64}).data
            return Reply(text[:40], self.request_latency)  # starts, then nothing more: no newline
        rsp = json.loads(REFUSALS[form].format(length=length, max=self.config.max_chunk))
        return self._reply(rsp)

    def _req_card_version(self, req: dict, now: float) -> dict:
        major, minor, patch = next(v for b, d, v in FIRMWARES.values()
                                   if (b, d) == (self.config.binary, self.config.dfu_binary))
        version = f"notecard-{major}.{minor}.{patch}"
        return {"version": f"{version}.1", "device": "dev:000000000000000", "name": "Blues Wireless Notecard",
                "sku": "NOTE-SIM", "board": "sim", "api": major,
                "body": {"org": "Blues Wireless", "product": "Notecard", "version": version,
                         "ver_major": major, "ver_minor": minor, "ver_patch": patch, "ver_build": 1,
                         "built": "simulated"}}

    def _req_card_dfu(self, req: dict, now: float) -> dict:
        if "name" in req:
            self.card_dfu["name"] = req["name"]
        for flag in ("on", "off"):
            if req.get(flag) is True:
                self.card_dfu["on"] = flag == "on"
        return {"name": self.card_dfu.get("name", "-"), "on": bool(self.card_dfu.get("on", False))}


def card_from_options(opts: dict[str, str | list[str]], *, state_clock: Callable[[], float] | None = None,
                      clock: Clock = WALL) -> NotecardSim:
    """A simulated card from string options: ``profile``, ``latency``, ``per_kib``,
    ``rate`` (bits per second), ``stretch`` (I2C clock stretching, seconds per
    byte the card sends) and everything :meth:`SimConfig.from_options` takes."""
    def one(key: str) -> float | None:
        value = opts.get(key)
        value = value[-1] if isinstance(value, list) else value
        return None if value is None else float(value)

    check_option_names(opts, CARD_OPTIONS, "sim://notecard")
    name = opts.get("profile", "usb")
    link = profile(name[-1] if isinstance(name, list) else name).with_overrides(
        request_latency=one("latency"), read_seconds_per_kib=one("per_kib"), bits_per_second=one("rate"),
        clock_stretch=one("stretch"))
    return NotecardSim(SimConfig.from_options(opts), link, clock=clock, state_clock=state_clock)
