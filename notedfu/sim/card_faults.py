"""The simulated Notecard's misbehaviour on request: faults that damage, delay or drop its answers
(``fault=KIND[:REQUEST][@N][+]``, see :mod:`notedfu.sim.faults`)."""

from __future__ import annotations

import base64

from notedfu.checksums import md5_hex
from notedfu.sim.card_config import TRACE_LINE, Reply
from notedfu.sim.faults import MODE_FAULTS


class CardFaults:
    """Mixed into :class:`notedfu.sim.notecard.NotecardSim`: which fault is due, and what it does to an answer."""

    def _stuck_in_dfu(self) -> bool:
        for fault in self.config.faults:
            if fault.kind == "nohandback" and self.data_requests >= fault.at and (fault.repeat or not fault.fired):
                fault.fired += 1
                return True
        return False

    def _take_fault(self) -> str | None:
        for fault in self.config.faults:
            if fault.request is None and fault.kind not in MODE_FAULTS and fault.due(self.data_requests):
                fault.fired += 1
                return fault.kind
        return None

    def _fault_before_request(self, fault: str | None) -> Reply | None:
        """A fault that strikes before the card looks at the request: a reboot (no answer at all), or DFU
        mode ending (the request then meets the card out of DFU mode)."""
        if fault == "restart":
            self.restart()
            return Reply(b"", self.request_latency, restarted=True)
        if fault == "dfuexit" and self.hub_mode == "dfu":
            self.hub_mode = self.mode_before_dfu
        return None

    def _named_fault(self, name: str) -> str | None:
        """A fault aimed at the request called ``name`` (``KIND:REQUEST``), if one is due."""
        for fault in self.config.faults:
            if fault.request == name and fault.due(self.requests.get(name, 0)):
                fault.fired += 1
                return fault.kind
        return None

    def _data_response(self, chunk: bytes, fault: str | None, base64_payload: bool) -> dict:
        status = md5_hex(chunk)
        if fault == "md5":
            status = md5_hex(chunk + b"!")
        if fault == "truncate":
            chunk = chunk[: len(chunk) // 2]
        payload = base64.b64encode(chunk).decode()
        if fault == "badb64":
            payload = "!!" + payload[2:]
        return {"payload": payload, "status": status}

    @staticmethod
    def _damage(reply: Reply, fault: str | None) -> Reply:
        """Apply the faults that hurt the bytes on the wire, not the content."""
        data = reply.data
        if fault == "drop" and len(data) > 40:
            data = data[:20] + data[36:]
        elif fault == "corrupt" and len(data) > 30:
            i = 12
            data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
        elif fault == "garbage":
            data = b"\x00\xff#garbage-from-the-card\r\n" + data
        elif fault == "trace":
            data = TRACE_LINE + data
        elif fault == "halfline":
            data = data[: max(1, len(data) // 2)].rstrip(b"\r\n") + b"\r\n" + data
        elif fault == "nonewline":
            data = data.rstrip(b"\r\n")
        reply.data = data
        return reply
