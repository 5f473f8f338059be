"""The update orchestrator: one full cycle, resumable at every stage.

``Updater.run()`` looks at the Notecard, decides by policy, and walks the
job's stages — check, enter_dfu, transfer, verify, exit_dfu, flash, boot,
confirm, report — persisting the job at every stage boundary. A run started
after a crash finds the job in ``processing`` and continues from the first
stage not done: the download resumes from its journal (or finds the image
staged), a flash is redone from the staged image (an interrupted flash leaves
an erased first page, never a bootable half image), boot, confirm and report
are repeated. The Notecard is handed back on every path by the downloader.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import Timeout

from notedfu.config import Config
from notedfu.errors import NotedfuError
from notedfu.events import STEPS, Events
from notedfu.notecard.client import CardClient, CardRequestError
from notedfu.notecard.dfu import Downloader, FetchOptions, ImageInfo
from notedfu.notecard.link import open_notecard
from notedfu.notecard.staging import Staging, default_state_dir
from notedfu.target.chips import FLASH_BASE
from notedfu.target.flasher import FlashOptions
from notedfu.target.image import Segment
from notedfu.target.lines import ENTER_BOOTLOADER, RUN_APPLICATION
from notedfu.target.session import TargetOptions, TargetSession
from notedfu.update.job import Job, JobStore

_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?")


def compare_versions(a: str, b: str) -> int | None:
    """-1, 0 or 1 for dotted versions; ``None`` when either does not parse."""
    ma, mb = _VERSION.match(a or ""), _VERSION.match(b or "")
    if not ma or not mb:
        return None
    ta = tuple(int(x or 0) for x in ma.groups())
    tb = tuple(int(x or 0) for x in mb.groups())
    return (ta > tb) - (ta < tb)


@dataclass
class Outcome:
    """What a cycle ended in."""

    state: str  # idle, downloading, ready (awaiting approval), or a job's terminal state
    job: Job | None = None
    detail: str = ""
    exit_code: int = 0


class StageFailed(NotedfuError):
    """A stage failed; carries the stage name."""

    def __init__(self, stage: str, error: NotedfuError) -> None:
        super().__init__(error.message, code=error.code)
        self.stage = stage
        self.exit_code = error.exit_code


class Updater:
    """Runs update cycles for one Notecard and one target."""

    def __init__(self, config: Config, events: Events | None = None, *, force: bool = False,
                 state_dir: Path | None = None) -> None:
        self.config = config
        self.events = events or Events()
        self.force = force
        root = Path(state_dir or config.agent.state_dir or default_state_dir())
        self.staging = Staging(root)
        self.store = JobStore(root)
        self.client: CardClient | None = None
        self.resumed = False

    # ------------------------------------------------------------ cycle
    def run(self) -> Outcome:
        """One cycle; refuses at once if another agent holds the state directory."""
        try:
            with self.staging.lock.acquire(timeout=0):
                return self._run()
        except Timeout:
            raise NotedfuError(f"another notedfu is using {self.staging.root}", code="E_BUSY") from None

    def _run(self) -> Outcome:
        nc = self.config.notecard
        self.client = CardClient(open_notecard(nc.spec, baud=nc.baud, timeout=nc.timeout))
        self.downloader = Downloader(self.client, self.staging, self.events, FetchOptions())
        job = self.store.current()
        if job is not None:
            self.events.message(f"continuing job {job.id} at stage {job.next_stage()}")
            return self._process(job)
        self.downloader.repair_card_mode()
        status = self.downloader.dfu_status()
        mode = status.get("mode")
        if mode == "downloading":
            self.events.status("IDLE", state="downloading", detail=str(status.get("status", "")))
            return Outcome("downloading", detail=str(status.get("status", "")))
        if mode != "ready":
            self.events.status("IDLE", state="idle")
            return Outcome("idle", detail=str(mode))
        image = ImageInfo.from_body(status.get("body"))
        job = Job.new(image.md5, image.length, version=image.version, name=image.source)
        verdict = self._version_verdict(image)
        if verdict == "up_to_date":
            job.state = "up_to_date"
            for name in STEPS:
                job.stages[name].state = "skipped"
            self._report(job, ok=True, text=f"already running {image.version}")
            self.store.save(job)
            self.events.status("SUCCESS", state="up_to_date", job=job.id, version=image.version)
            return Outcome("up_to_date", job)
        if self.config.policy.mode == "manual" and not self._approved(image.md5):
            self.events.status("IDLE", state="ready", md5=image.md5, version=image.version,
                               detail="waiting for `notedfu approve`")
            return Outcome("ready", None, f"image {image.md5} ({image.version or 'no version'}) awaits approval")
        self.store.save(job)
        return self._process(job, verdict)

    def _version_verdict(self, image: ImageInfo) -> str:
        installed = self.store.installed().get("version", "")
        order = compare_versions(image.version, installed) if installed else None
        if order == 0 and not self.force:
            return "up_to_date"
        if order == -1 and not self.config.policy.allow_downgrade:
            return "downgrade"
        return "install"

    def _approved(self, md5: str) -> bool:
        return (self.staging.root / "approved" / md5).exists()

    # ------------------------------------------------------------ stages
    def _process(self, job: Job, verdict: str = "install") -> Outcome:
        job.attempts += 1
        self.events.status("START", job=job.id, md5=job.md5, version=job.version)
        try:
            if verdict == "downgrade":
                installed = self.store.installed().get("version")
                raise StageFailed("check", NotedfuError(
                    f"image version {job.version} is older than the installed {installed} "
                    "(set policy.allow_downgrade to install it)", code="E_DOWNGRADE"))
            stage = job.next_stage()
            while stage is not None:
                self._stage(job, stage)
                stage = job.next_stage()
        except StageFailed as failure:
            return self._fail(job, failure)
        return Outcome(job.state, job)

    def _stage(self, job: Job, name: str) -> None:
        stage = job.stages[name]
        self.resumed = stage.state == "running"  # an earlier run died inside this stage
        stage.state, stage.started = "running", time.time()
        self.store.save(job)
        try:
            result = getattr(self, f"_stage_{name}")(job)
        except NotedfuError as exc:
            stage.state, stage.code, stage.message, stage.ended = "error", exc.code, exc.message, time.time()
            self.store.save(job)
            raise StageFailed(name, exc) from exc
        stage.state = "skipped" if result == "skipped" else "done"
        stage.ended = time.time()
        self.store.save(job)

    def _stage_check(self, job: Job) -> None:
        self.events.step("check", "checking the offered image and the card")
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

    def _download(self, job: Job) -> None:
        """enter_dfu … exit_dfu in one go: the downloader owns the card's mode."""
        result = self.downloader.fetch()
        if result.image.md5 != job.md5:
            raise NotedfuError(f"the card now offers {result.image.md5}, not {job.md5}", code="E_IMAGE_CHANGED")
        for name in ("enter_dfu", "transfer", "verify", "exit_dfu"):
            if job.stages[name].state != "done":
                job.stages[name].state = "done"
                job.stages[name].ended = time.time()
        self.store.save(job)

    _stage_enter_dfu = _download
    _stage_transfer = _download
    _stage_verify = _download
    _stage_exit_dfu = _download

    def _target(self) -> TargetSession:
        tc = self.config.target
        if not tc.spec:
            raise NotedfuError("no target configured ([target] spec or --target)", code="E_NO_TARGET")
        return TargetSession(tc.spec, TargetOptions(tc.baud, tc.boot0, tc.reset, tc.enter or ENTER_BOOTLOADER,
                                                    tc.run or RUN_APPLICATION), self.events)

    def _staged_image(self, job: Job) -> list[Segment]:
        path = self.staging.paths(job.md5)[2]
        try:
            return [Segment(FLASH_BASE, path.read_bytes())]
        except OSError as exc:
            raise NotedfuError(f"staged image {path} is missing: {exc.strerror}", code="E_STAGING") from exc

    def _stage_flash(self, job: Job) -> None:
        self.events.step("flash", "flashing the target")
        session = self._target()
        try:
            session.connect()
            session.flash(self._staged_image(job), FlashOptions(verify=self.config.target.verify, run=False))
        finally:
            session.close()

    def _stage_boot(self, job: Job) -> None:
        self.events.step("boot", "starting the new firmware")
        session = self._target()
        try:
            if not session.lines.wired:
                try:
                    session.connect()
                except NotedfuError as exc:
                    if exc.code != "E_TARGET_NO_SYNC" or not self.resumed:
                        raise
                    # No reset line, and the bootloader is silent: an earlier run's Go already started
                    # the application before it was interrupted. The confirm stage checks that it runs.
                    self.events.message("the bootloader no longer answers: the application already runs", "warning")
                    return
            session.start_application()
        finally:
            session.close()

    def _stage_confirm(self, job: Job) -> str | None:
        console = self.config.confirm.console
        if not console:
            self.events.message("no console configured: boot confirmation skipped")
            return "skipped"
        pattern = self.config.confirm.pattern.replace("{version}", re.escape(job.version))
        self.events.step("confirm", f"waiting for /{pattern}/ on {console}")
        from notedfu.update.confirm import watch_console

        if not watch_console(console, pattern, self.config.confirm.timeout, self.config.confirm.baud):
            job.state = "unconfirmed"
            raise NotedfuError(f"the new firmware did not print /{pattern}/ within {self.config.confirm.timeout:g} s",
                               code="E_UNCONFIRMED")
        return None

    def _stage_report(self, job: Job) -> None:
        self.events.step("report", "reporting to Notehub")
        self._report(job, ok=True, text=f"firmware {job.version or job.md5} installed")
        if job.version:
            self.client.request({"req": "dfu.status", "name": "user", "version": job.version})
        self.store.set_installed(job.version, job.md5)
        job.state = "success"
        self.events.status("SUCCESS", job=job.id, version=job.version)

    # ------------------------------------------------------------ endings
    def _report(self, job: Job, ok: bool, text: str) -> None:
        req: dict[str, Any] = {"req": "dfu.status", "name": "user", "stop": True}
        req["status" if ok else "err"] = text[:200]
        self.client.request(req)

    def _fail(self, job: Job, failure: StageFailed) -> Outcome:
        unconfirmed = failure.code == "E_UNCONFIRMED"
        job.state = "unconfirmed" if unconfirmed else "fail"
        job.error = {"stage": failure.stage, "code": failure.code, "message": failure.message}
        for name in STEPS:
            if job.stages[name].state == "pending":
                job.stages[name].state = "skipped"
        try:
            self._report(job, ok=False, text=f"{failure.code}: {failure.message}")
            job.stages["report"].state = "done"
        except NotedfuError as exc:
            self.events.message(f"could not report the failure to Notehub: {exc}", "error")
        self.store.save(job)
        self.events.status("FAILURE", job=job.id, state=job.state, error=job.error)
        return Outcome(job.state, job, failure.message, int(failure.exit_code))
