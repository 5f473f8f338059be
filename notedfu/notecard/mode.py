"""The Notecard's hub mode: into DFU mode, and always back to the mode it was found in.

Both directions of host DFU — reading an image out (``dfu.get``) and
side-loading one in (``dfu.put``) — need the card in DFU mode, where it stops
talking to Notehub. :class:`CardMode` is the one place that switches it:

* the mode found by ``hub.get`` is written to ``card-mode.json`` (fsynced)
  *before* ``hub.set mode:dfu``, so a crash cannot lose it;
* :meth:`CardMode.hand_back` restores it and clears the file, or keeps the
  file when the card cannot be reached;
* :meth:`CardMode.repair` restores it at the next start if an earlier run died
  with the card in DFU mode.
"""

from __future__ import annotations

import time
from typing import Any

from notedfu import stopping
from notedfu.errors import BadResponseError, DfuModeLost, DfuNotReady, NotedfuError, NotReadyError
from notedfu.events import Events
from notedfu.notecard.client import CardClient
from notedfu.notecard.staging import Staging


class CardMode:
    """Switches one card in and out of DFU mode, remembering where to return."""

    def __init__(self, client: CardClient, staging: Staging, events: Events | None = None) -> None:
        self.client = client
        self.staging = staging
        self.events = events or Events()
        self.entered_at = 0.0  # when hub.set dfu was last sent (the card's 15-minute timer restarts)

    def current(self) -> str:
        """The card's hub mode (``hub.get``)."""
        mode = self.client.request({"req": "hub.get"}).get("mode")
        if not isinstance(mode, str):
            raise BadResponseError("hub.get: no mode in the answer", code="E_BAD_RESPONSE")
        return mode

    def set(self, mode: str) -> None:
        """``hub.set mode:MODE``; sending ``dfu`` again restarts the card's DFU timer."""
        self.client.request({"req": "hub.set", "mode": mode})
        if mode == "dfu":
            self.entered_at = time.monotonic()

    def remember(self) -> str | None:
        """Save the mode to hand back (unless one is saved already); return it."""
        saved = self.staging.saved_card_mode()
        current = self.current()
        if saved is None and current != "dfu":
            saved = current
            self.staging.save_card_mode(saved)
        return saved

    def wait_until_ready(self, probe: dict[str, Any], timeout: float, poll: float) -> None:
        """``hub.set dfu``, then send ``probe`` until the card stops answering ``{dfu-not-ready}``."""
        self.set("dfu")
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.request(probe)
                return
            except DfuModeLost:  # dropped out between set and probe: ask again
                self.set("dfu")
            except DfuNotReady:
                pass
            if time.monotonic() > deadline:
                raise NotReadyError(f"DFU mode did not become active within {timeout:g} s", code="E_DFU_NOT_READY")
            stopping.sleep(poll)

    def hand_back(self, saved: str | None) -> str:
        """Restore ``saved`` (or leave DFU mode); return the mode the card is in.

        Never raises: if the card cannot be reached, ``card-mode.json`` stays
        and :meth:`repair` finishes the job later; ``"dfu"`` is returned.
        """
        with stopping.shielded():  # a stop asked for meanwhile waits until the card is back
            return self._hand_back(saved)

    def _hand_back(self, saved: str | None) -> str:
        problem = ""
        for _ in range(2):
            try:
                self.set(saved or "dfu-completed")
            except NotedfuError as exc:
                problem = str(exc)  # the card may have switched and only its answer got lost: look
            try:
                mode = self.current()  # the mode the card reports is the proof, not hub.set's answer
            except NotedfuError as exc:
                problem = str(exc)
                continue
            if mode != "dfu":
                if saved is not None:
                    self.staging.clear_card_mode()
                return mode
            problem = problem or "hub.get still says dfu"
        self.events.message(f"could not hand the Notecard back ({problem}); the next run will", "error")
        return "dfu"

    def repair(self) -> str | None:
        """Hand the card back if an interrupted run left it in DFU mode; return the mode set."""
        saved = self.staging.saved_card_mode()
        if saved is None:
            return None
        with stopping.shielded():
            return self._repair(saved)

    def _repair(self, saved: str) -> str:
        if self.current() == "dfu":
            self.events.message(f"the Notecard was left in DFU mode by an interrupted run: restoring '{saved}'",
                                "warning")
            self.set(saved)
        self.staging.clear_card_mode()
        return saved
