"""The update orchestrator: one full cycle, resumable at every stage.

``Updater.run()`` looks at the Notecard, decides by policy, and walks the
job's stages — check, enter_dfu, transfer, verify, exit_dfu, flash, boot,
confirm, report — persisting the job at every stage boundary. A run started
after a crash finds the job in ``processing`` and continues from the first
stage not done: the download resumes from its journal (or finds the image
staged), a flash is redone from the staged image (an interrupted flash leaves
an erased first page, never a bootable half image), boot, confirm and report
are repeated. The download is four stages the orchestrator calls one by one
(:class:`~notedfu.notecard.dfu.Download`: enter, transfer, verify, hand back);
the Notecard is handed back on every path.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from notedfu import stopping
from notedfu.config import Config
from notedfu.errors import (Cancelled, CardRequestError, ExitCode, ImageSuperseded, Interrupted, NoImage, NotedfuError,
                            StageFailed, Unconfirmed)
from notedfu.events import Events
from notedfu.notecard.client import CardClient
from notedfu.notecard.dfu import Download, Downloader, FetchOptions, ImageInfo
from notedfu.notecard.link import open_notecard
from notedfu.notecard.staging import Staging, default_state_dir
from notedfu.protocol.firmware import firmware_info
from notedfu.update.job import DOWNLOAD_STAGES, Job, JobStore, job_summary
from notedfu.update.signature import public_key_from_text, split_signed
from notedfu.update.endings import JobEndings, Outcome, clock
from notedfu.update.policy import decide
from notedfu.update.rebuild import Rebuilder
from notedfu.update.target_stages import TargetStages

@dataclass(frozen=True)
class LocalImage:
    """An image handed to the agent directly instead of offered by the Notecard."""

    data: bytes
    source: str = "LOCAL"  # LOCAL (a file) or IPC (streamed over the control socket)





# Stages a cancel may still stop: after the flash has begun, stopping would leave the target without firmware.
CANCELLABLE = ("check", "enter_dfu", "transfer", "verify", "exit_dfu", "flash")


class Updater:
    """Runs update cycles for one Notecard and one target."""

    def __init__(self, config: Config, events: Events | None = None, *, force: bool = False,
                 state_dir: Path | None = None, retry_now: bool = False) -> None:
        self.config = config
        self.events = events or Events()
        self.force = force
        self.retry_now = retry_now  # a job waiting to try again goes on now (`notedfu update`), not at retry_at
        root = Path(state_dir or config.agent.state_dir or default_state_dir())
        warn = lambda text: self.events.message(text, "warning")  # noqa: E731
        self.staging = Staging(root, warn)
        self.store = JobStore(root, warn)
        self.public_key = public_key_from_text(config.policy.public_key) if config.policy.public_key else None
        self.target = TargetStages(config, self.events, self.store, self.staging, self.public_key)
        self.rebuilder = Rebuilder(self.staging, self.events, self.target.read_chip)
        self.endings = JobEndings(config, self.events, self.store, lambda: self.client)
        self.client: CardClient | None = None
        self.job: Job | None = None  # the job being processed, for status answers
        self.cancel_requested = threading.Event()
        self._cancel_lock = threading.Lock()
        self._last_idle: dict[str, Any] = {}
        self.continuing = False  # this run continues a job an earlier run left unfinished
        self.download: Download | None = None  # the image being read from the card (enter_dfu … exit_dfu)
        self._offer: dict[str, Any] | None = None  # the dfu.status this run's new job was made from

    # ------------------------------------------------------------ cycle
    def run(self, local: LocalImage | None = None) -> Outcome:
        """One cycle; refuses at once if another agent holds the state directory."""
        with self.staging.claimed():
            self.target.flashing = self.continuing = False
            self.download = self._offer = None
            try:
                return self._run(local)
            finally:
                self._hand_back()  # whatever ended the run, the card is not left in DFU mode
                self.download = None
                self._close_card()
                self.job = None
                self.events.source = "NOTECARD"

    def _open_card(self, required: bool = True) -> None:
        nc = self.config.notecard
        if not required and not nc.spec:
            return
        self.client = open_notecard(nc.spec, baud=nc.baud, timeout=nc.timeout)
        self.downloader = Downloader(self.client, self.staging, self.events,
                                     FetchOptions(ready_timeout=nc.ready_timeout, cancelled=self._take_cancel))

    def _close_card(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            client.close()

    def _run(self, local: LocalImage | None) -> Outcome:
        job = self.store.current()
        self._open_card(required=local is None and (job is None or job.source == "NOTECARD"))
        if self.client is not None:
            self.downloader.mode.repair()  # a card an earlier run left in DFU mode goes back first, whatever else
        if job is not None:
            if job.retry_at > time.time() and not self.retry_now:
                return Outcome("retry", job, f"job {job.id} tries again at {clock(job.retry_at)} "
                                             f"(attempt {job.attempts + 1} of {self.config.agent.retry_limit})",
                               int(ExitCode.TRY_LATER))
            if local is not None:
                self.events.message("an interrupted job is finished first; install the image again after it",
                                    "warning")
            self.events.message(f"continuing job {job.id} at stage {job.next_stage()}")
            self.continuing = True
            if job.source == "NOTECARD" and job.stages["exit_dfu"].state not in ("done", "skipped"):
                for name in DOWNLOAD_STAGES:  # DFU mode ended with the run: enter it again, resume the journal
                    job.stages[name].state = "pending"
            if job.next_stage() == "confirm":
                job.stages["boot"].state = "pending"  # start it again, so that it prints its banner again
            return self._process(job)
        if local is not None:
            return self._start_local(local)
        self.downloader.mode.repair()
        status = self.downloader.dfu_status()
        self._offer = status  # the download begins with it (no second 500-byte dfu.status on a slow link)
        mode = status.get("mode")
        if mode == "downloading":
            self._idle(state="downloading", detail=str(status.get("status", "")))
            return Outcome("downloading", detail=str(status.get("status", "")))
        if mode != "ready":
            self.store.clear_pending()
            self._idle(state="idle")
            return Outcome("idle", detail=str(mode))
        try:
            image = ImageInfo.from_body(status.get("body"))
        except NotedfuError as exc:
            return self.endings.refuse_offer(exc)
        job = Job.new(image.md5, image.length, version=image.version, name=image.source)
        if (rejected := self.store.rejected(image.md5)) and not self.force:
            return self.endings.refuse_rejected(job, rejected)
        verdict = self._decide(job)
        if verdict == "up_to_date":
            return self.endings.up_to_date(job)
        if self.config.policy.mode == "manual" and not self.store.take_approval(image.md5):
            self.store.set_pending(image.md5, image.version, image.length)
            self._idle(state="ready", md5=image.md5, version=image.version,
                       detail=f"waiting for `notedfu approve {image.md5}`")
            return Outcome("ready", None, f"image {image.md5} ({image.version or 'no version'}) awaits approval")
        self.store.clear_pending()
        self.store.save(job)
        return self._process(job, verdict)

    def _idle(self, **fields: Any) -> None:
        """An IDLE status, once per change: a daemon polling an idle card every minute says so once."""
        if fields != self._last_idle:
            self._last_idle = fields
            self.events.status("IDLE", **fields)

    def _start_local(self, local: LocalImage) -> Outcome:
        """A job for an image given directly: the Notecard's download stages are skipped."""
        self.events.source = local.source
        journal = self.staging.stage_bytes(local.data, source=local.source)
        version = firmware_info(split_signed(local.data)[0]).get("version")
        job = Job.new(journal.md5, journal.length, version=version if isinstance(version, str) else "",
                      source=local.source)
        for name in ("enter_dfu", "transfer", "exit_dfu"):
            job.stages[name].state = "skipped"
        verdict = self._decide(job)
        if verdict == "up_to_date":
            return self.endings.up_to_date(job)
        self.store.save(job)
        return self._process(job, verdict)

    def _decide(self, job: Job) -> str:
        """``install``, ``up_to_date`` or ``downgrade`` (:func:`notedfu.update.policy.decide`)."""
        return decide(job, self.store, self.config.policy, self.events, force=self.force,
                      chip_holds=self.target.chip_holds)

    def request_cancel(self) -> str:
        """Ask the running job to stop before the target is touched; ``""`` if accepted, else why not."""
        with self._cancel_lock:
            job = self.job
            if job is None:
                return "no job is running"
            stage = job.next_stage()
            if self.target.flashing or stage not in CANCELLABLE or (stage == "flash" and
                                                             job.stages["flash"].state == "running"):
                return (f"job {job.id} is past the point of cancelling (stage {stage}): stopping now would leave "
                        "the target without firmware")
            self.cancel_requested.set()
            return ""

    def _process(self, job: Job, verdict: str = "install") -> Outcome:
        with self._cancel_lock:
            self.cancel_requested.clear()  # a cancel belongs to the job it was given for
        self.job = job
        self.events.source = job.source  # events say where this job's image came from
        job.attempts += 1
        self.events.status("START", job=job.id, md5=job.md5, version=job.version)
        try:
            if verdict == "downgrade":
                installed = self.store.installed().get("version")
                raise StageFailed("check", NotedfuError(
                    f"image version {job.version} is older than the installed {installed} "
                    "(set policy.allow_downgrade to install it)", code="E_DOWNGRADE", permanent=True))
            stage = job.next_stage()
            while stage is not None:
                if stopping.requested():
                    raise Interrupted(f"stopped by {stopping.reason()} before stage {stage}; the next start "
                                      f"continues job {job.id}")
                self._stage(job, stage)
                stage = job.next_stage()
        except StageFailed as failure:
            if failure.stage == "report":
                return self.endings.report_pending(job, failure)
            if isinstance(failure.error, ImageSuperseded):
                return self.endings.supersede(job, failure)
            if isinstance(failure.error, Unconfirmed) and not job.rolled_back:
                if job.lkg and self.target.lines_wired():
                    return self.endings.fail(job, self.target.roll_back(job, failure))
                self.events.message("cannot roll back: " + ("no reset line to take the board back into its "
                                                           "bootloader" if job.lkg else "no last-known-good image"),
                                    "warning")
            if failure.permanent or job.attempts >= self.config.agent.retry_limit:
                return self.endings.fail(job, failure)
            return self.endings.retry_later(job, failure)
        self.events.status("SUCCESS", job=job.id, version=job.version, state=job.state,  # once saved as done
                           result=job_summary(job))
        return Outcome(job.state, job)

    def _stage(self, job: Job, name: str) -> None:
        stage = job.stages[name]
        self.target.resumed = self.continuing  # an earlier run died inside this job
        try:
            with self._cancel_lock:  # a cancel is either seen here or refused: never left for another job
                if self.cancel_requested.is_set() and name in CANCELLABLE and not self.target.flashing:
                    raise Cancelled("cancelled on request before the target was touched")
                stage.state, stage.started = "running", time.time()
            self.store.save(job)
            self.events.status("RUN", job=job.id, stage=name)
            result = getattr(self, f"_stage_{name}")(job)
        except Interrupted:
            # Not a failure of the stage: it starts again, from where its own journal says, next time.
            self._hand_back()
            stage.state = "pending"
            self.store.save(job)
            raise
        except NotedfuError as exc:
            self._hand_back()  # the card first; the failure is the news
            stage.state, stage.code, stage.message, stage.ended = "error", exc.code, exc.message, time.time()
            self.store.save(job)
            raise StageFailed(name, exc) from exc
        stage.state = "skipped" if result == "skipped" else "done"
        stage.ended = time.time()
        self.store.save(job)

    def _hand_back(self) -> None:
        """After a failure inside the download: the card back in its mode (never raises)."""
        if self.download is not None:
            self.download.hand_back()

    def _take_cancel(self) -> bool:
        """The download's cancel token: a pending cancel is taken (once) while the target is untouched."""
        with self._cancel_lock:
            if self.cancel_requested.is_set() and not self.target.flashing:
                self.cancel_requested.clear()
                return True
        return False

    def _stage_check(self, job: Job) -> None:
        self.events.step("check", "checking the offered image and the card")
        if self.client is None:
            return
        try:
            outboard = self.client.request({"req": "card.dfu"})
        except CardRequestError:
            outboard = {}
        if outboard.get("on"):
            if self.config.policy.outboard_dfu == "disable":
                self.client.request({"req": "card.dfu", "off": True})
                self.events.message("switched the Notecard's Outboard DFU off: it would fight the agent", "warning")
            else:
                self.events.message("the Notecard's Outboard DFU is on and may flash the host too "
                                    "(set policy.outboard_dfu = \"disable\")", "warning")

    def _stage_enter_dfu(self, job: Job) -> str | None:
        """What the card offers must still be this job's image; then DFU mode (unless it is staged)."""
        offer, self._offer = self._offer, None
        try:
            self.download = download = self.downloader.begin(offer)
        except NoImage as exc:
            raise ImageSuperseded(f"the Notecard no longer offers image {job.md5} ({exc.message})") from exc
        if download.image.md5 != job.md5:
            raise ImageSuperseded(f"the card now offers {download.image.md5}, not {job.md5}")
        if download.result.already_staged:
            return "skipped"
        download.enter()
        return None

    def _stage_transfer(self, job: Job) -> str | None:
        assert self.download is not None
        if self.download.result.already_staged:
            return "skipped"
        self.download.transfer()
        return None

    def _stage_verify(self, job: Job) -> None:
        """Length, MD5 and CRC-32 of what was read (an image staged earlier was checked then), and the
        signature, before the card is handed back."""
        if self.download is not None and not self.download.result.already_staged:
            self.download.verify()
        self._check_image(job)

    def _stage_exit_dfu(self, job: Job) -> str | None:
        if self.download is None or not self.download.entered:
            return "skipped"
        self.download.hand_back()
        return None

    def _check_image(self, job: Job) -> None:
        """The signature (with a key configured), an update file rebuilt into its image, and the version the
        image says it is."""
        if self.public_key is not None:
            self.events.step("verify", "checking the image's Ed25519 signature")
        self.rebuilder.rebuild(job, self.target.package(job))
        payload = self.target.payload(job)
        if not job.version:
            version = firmware_info(payload).get("version")
            job.version = version if isinstance(version, str) else ""


    def _stage_flash(self, job: Job) -> None:
        self.target.flash(job)

    def _stage_boot(self, job: Job) -> str | None:
        return self.target.boot(job)

    def _stage_confirm(self, job: Job) -> str | None:
        return self.target.confirm(job)

    def _stage_report(self, job: Job) -> str | None:
        image_md5 = job.built.get("md5", job.md5)
        self.store.set_installed(job.version, image_md5, package=job.md5 if job.built else "")
        self.staging.prune(keep={image_md5})  # the image the chip now holds: the next last-known-good and delta base
        result: str | None = None
        if self.client is None:
            self.events.message("no Notecard configured: nothing reported to Notehub")
            result = "skipped"
        else:
            self.events.step("report", "reporting to Notehub")
            try:
                self.downloader.mode.repair()  # if exit_dfu could not hand the card back, now it can
                if job.source == "NOTECARD":
                    done = "already running" if job.unchanged else "installed"
                    self.endings.report_stop(job, ok=True, text=f"firmware {job.version or job.md5} {done}")
                if job.version:
                    self.client.request({"req": "dfu.status", "name": "user", "version": job.version})
            except NotedfuError as exc:
                if job.source == "NOTECARD":
                    raise  # Notehub must hear of it: the job stays open and the next run reports
                self.events.message(f"could not report the local install to Notehub: {exc}", "warning")
        job.state = "up_to_date" if job.unchanged else "success"
        return result
