"""``notedfu run``: the agent as a service.

One thread does all the device work — poll ``dfu.status`` every
``poll_interval`` seconds, run jobs by policy — so a poll never overlaps a
job. The control socket answers in its own threads and only sets flags and
queues: an install waits for the worker, a second one is refused at once.

SIGTERM / SIGINT: while the card is being read (or nothing runs) the agent
stops at once — the download unwinds through the code that hands the card
back, the job stays on disk and the next start continues it. While the target
is being flashed, it stops at the end of the flash stage: an interrupted flash
would leave the target without firmware until the next start.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import stat
import threading
from pathlib import Path
from typing import Any


from notedfu import stopping
from notedfu.checksums import md5_hex
from notedfu.config import Config
from notedfu.errors import Busy, ExitCode, Interrupted, NotedfuError
from notedfu.events import Events
from notedfu.notecard.dfu import MAX_IMAGE_BYTES
from notedfu.update.agent import LocalImage, Outcome, Updater
from notedfu.update.control import Connection, ControlError, ControlServer
from notedfu.update.job import job_summary
from notedfu.update.peer import Peer
from notedfu.update.sdnotify import Notifier


class Daemon:
    """Polls, runs jobs and answers the control socket until told to stop."""

    def __init__(self, config: Config, events: Events, notifier: Notifier | None = None) -> None:
        self.config = config
        self.events = events
        self.notifier = notifier or Notifier()
        self.updater = Updater(config, events)
        self.store = self.updater.store
        self._lock = threading.Lock()
        self._queued: LocalImage | None = None
        self._installing: LocalImage | None = None  # taken from the queue, its job not yet started
        self._wake = threading.Event()
        self._subscribers: set[queue.Queue] = set()
        self.last: Outcome | None = None
        events.sinks.insert(0, self._fan_out)

    # ------------------------------------------------------------ main loop
    def serve(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit code."""
        with self.updater.staging.claimed():  # one agent per state directory, for as long as it serves
            server = None
            try:
                server = ControlServer(self.config.agent.socket, self).start()
                self.events.message(f"notedfu daemon listening on {server.path}, polling every "
                                    f"{self.config.agent.poll_interval:g} s")
                self.notifier.notify(ready=1, status="idle")
                while not stopping.requested():
                    self._cycle()
                    self._sleep(self.config.agent.poll_interval)
            except Interrupted:
                pass
            finally:
                self.notifier.notify(stopping=1, status="stopping")
                if server is not None:
                    server.stop()
                for subscriber in list(self._subscribers):
                    subscriber.put(None)
        self.events.message("notedfu daemon stopped")
        return int(ExitCode.OK)

    def _cycle(self) -> None:
        with self._lock:
            local, self._queued = self._queued, None
            self._installing = local
        try:
            self.last = self.updater.run(local)
        except Interrupted:
            raise
        except NotedfuError as exc:  # the card unplugged, a bad answer: log it, try again next poll
            self.events.message(f"update cycle failed: {exc}", "error")
            self.last = Outcome("error", None, str(exc))
        finally:
            self._installing = None
        state = self.last.state
        self.notifier.notify(status=f"{state}: {self.last.detail}"[:200] if self.last.detail else state)

    def _sleep(self, seconds: float) -> None:
        """Wait for the next poll, a request, or a signal, pinging the watchdog meanwhile."""
        step = min(seconds, self.notifier.watchdog_interval or seconds)
        remaining = seconds
        while remaining > 0 and not stopping.requested():
            self.notifier.ping()
            # Short slices: a signal only sets a flag (notedfu.stopping), nothing wakes this wait.
            if self._wake.wait(min(step, remaining, 0.2)):
                self._wake.clear()
                return
            remaining -= min(step, remaining, 0.2)

    # ------------------------------------------------------------ events
    def _fan_out(self, event: dict[str, Any]) -> None:
        self.notifier.ping()
        for subscriber in list(self._subscribers):
            subscriber.put(event)

    def subscribe(self) -> "queue.Queue[dict[str, Any] | None]":
        """A queue fed with every event from now on."""
        events: queue.Queue = queue.Queue(maxsize=10_000)
        self._subscribers.add(events)
        return events

    def unsubscribe(self, events: "queue.Queue[dict[str, Any] | None]") -> None:
        """Stop feeding ``events``."""
        self._subscribers.discard(events)

    # ------------------------------------------------------------ control requests
    def handle(self, request: dict[str, Any], connection: Connection) -> dict[str, Any]:
        """Answer one control request."""
        return getattr(self, f"_cmd_{request['cmd']}")(request, connection)

    def _cmd_status(self, request: dict[str, Any], connection: Connection) -> dict[str, Any]:
        running = self.updater.job
        # A job that has ended is the last job, not the current one, even while its run is still closing the card.
        job = (running if running is not None and not running.terminal else None) or self.store.current()
        return {"ok": True, "state": "processing" if job else (self.last.state if self.last else "idle"),
                "detail": self.last.detail if self.last and not job else "",
                "job": dataclasses.asdict(job) if job else None,
                "last_job": job_summary(self.store.latest()), "installed": self.store.installed(),
                "pending": self.store.pending(), "policy": self.config.policy.mode,
                "queued": self._queued is not None, "subscribers": len(self._subscribers)}

    def _busy(self) -> str | None:
        job = self.updater.job
        if job is not None:
            return f"job {job.id} is running (stage {job.next_stage()})"
        if self._queued is not None or self._installing is not None:
            return "an install is already queued"
        return None

    def _cmd_install(self, request: dict[str, Any], connection: Connection) -> dict[str, Any]:
        if busy := self._busy():  # refused before reading a byte of the image
            raise Busy(f"busy: {busy}")
        if request.get("stream") is True:
            length = request.get("length")
            if not isinstance(length, int) or isinstance(length, bool) or not 0 < length <= MAX_IMAGE_BYTES:
                raise ControlError(f"install: length must be an integer in 1..{MAX_IMAGE_BYTES}")
            image = LocalImage(connection.read_exact(length), source="IPC")
        elif isinstance(request.get("path"), str):
            image = LocalImage(_read_for(connection.peer, Path(request["path"])), source="LOCAL")
        else:
            raise ControlError('install: give "path" (absolute) or "stream": true with "length"')
        if not image.data:
            raise ControlError("install: the image is empty", code="E_IMAGE_FILE")
        with self._lock:
            if busy := self._busy():  # another install won the race while this one was read
                raise Busy(f"busy: {busy}")
            self._queued = image
        self._wake.set()
        return {"ok": True, "queued": True, "md5": md5_hex(image.data), "length": len(image.data)}

    def _cmd_approve(self, request: dict[str, Any], connection: Connection) -> dict[str, Any]:
        md5 = request.get("md5")
        if not isinstance(md5, str):
            raise ControlError('approve: give the image\'s "md5"')
        try:
            note = self.store.approve(md5)
        except NotedfuError as exc:
            raise ControlError(exc.message, code=exc.code) from None
        self._wake.set()
        return {"ok": True, "md5": md5.lower(), "note": note}

    def _cmd_cancel(self, request: dict[str, Any], connection: Connection) -> dict[str, Any]:
        job = self.updater.job
        if job is None:
            with self._lock:
                if self._queued is not None:
                    self._queued = None
                    return {"ok": True, "cancelled": "the queued install"}
            raise ControlError("no job is running", code="E_NOTHING_TO_CANCEL")
        if refused := self.updater.request_cancel():
            code = "E_NOTHING_TO_CANCEL" if refused == "no job is running" else "E_TOO_LATE"
            raise ControlError(refused, code=code)
        return {"ok": True, "cancelled": job.id}


def _read_for(peer: Peer | None, path: Path) -> bytes:
    """The image at ``path``, read only if the client that named it could read it itself.

    The daemon may run as root: without this, any local user could have it copy ``/etc/shadow`` into staging.
    The bits are checked on the resolved path, then again on the descriptor actually opened (a path swapped
    in between is caught), and the final component is never followed as a symlink.
    """
    if not path.is_absolute():
        raise ControlError("install: path must be absolute (the daemon has its own working directory)")
    refused = ControlError(f"install: {path}: the requesting process may not read it (the daemon reads "
                           "only what its client could; or stream it: notedfu install --stream)", code="E_IMAGE_FILE")
    if peer is None and os.geteuid() == 0:
        raise refused  # no way to know who asked
    try:
        resolved = path.resolve(strict=True)
        if peer is not None and not peer.may_read(resolved):
            raise refused
        with os.fdopen(os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as stream:
            st = os.fstat(stream.fileno())
            if peer is not None and not peer.may_read_file(st):
                raise refused
            if not stat.S_ISREG(st.st_mode):
                raise ControlError(f"install: {path} is not a regular file", code="E_IMAGE_FILE")
            data = b"" if st.st_size > MAX_IMAGE_BYTES else stream.read(MAX_IMAGE_BYTES + 1)
            if st.st_size > MAX_IMAGE_BYTES or len(data) > MAX_IMAGE_BYTES:
                raise ControlError(f"install: {path} is larger than {MAX_IMAGE_BYTES} bytes", code="E_IMAGE_FILE")
            return data
    except OSError as exc:
        raise ControlError(f"install: cannot read {path}: {exc.strerror}", code="E_IMAGE_FILE") from None
