"""The agent's work on the target: look at the chip, keep the last-known-good, flash, start, confirm, roll back.

The orchestrator (:mod:`notedfu.update.agent`) decides when each stage runs and
records it in the job; this module decides how, through the target's driver
(:mod:`notedfu.target.driver`: the ROM bootloader or an external tool, from the
same spec registry ``notedfu flash`` uses).
"""

from __future__ import annotations

import re
from typing import Any

from notedfu import stopping
from notedfu.checksums import md5_hex
from notedfu.config import Config
from notedfu.errors import NotedfuError, StageFailed, TargetNoSync, Unconfirmed
from notedfu.events import Events
from notedfu.notecard.staging import Staging
from notedfu.protocol.chips import FLASH_BASE
from notedfu.protocol.firmware import firmware_info
from notedfu.specs import parse_region
from notedfu.target.driver import TargetDriver, TargetOptions
from notedfu.target.plan import FlashOptions
from notedfu.target.image import Segment
from notedfu.target.lines import ENTER_BOOTLOADER, RUN_APPLICATION
from notedfu.target.registry import target_driver
from notedfu.update.job import DOWNLOAD_STAGES, Job, JobStore
from notedfu.update.signature import verified_payload


class TargetStages:
    """The flash, boot and confirm stages, the chip's own answer to "what do you hold?", and the rollback."""

    def __init__(self, config: Config, events: Events, store: JobStore, staging: Staging,
                 public_key: Any = None) -> None:
        self.config = config
        self.events = events
        self.store = store
        self.staging = staging
        self.public_key = public_key
        self.flashing = False  # the flash has begun: too late to cancel
        self.resumed = False  # an earlier run died inside this job

    def chip_holds(self, md5: str) -> bool | None:
        """Whether the target holds the staged image ``md5``; ``None`` when that cannot be known here."""
        path = self.staging.paths(md5)[2]
        if not self.config.target.spec or not path.exists() or not self.lines_wired():
            return None  # no reset line: looking would stop the running application for good
        try:
            payload = verified_payload(path.read_bytes(), None)
            driver = self.driver()
            if not driver.reads_chip:
                return None
            with driver:
                driver.connect()
                held = driver.holds([Segment(FLASH_BASE, payload)], self.options())
                driver.start()  # it was running before we looked
        except NotedfuError as exc:
            self.events.message(f"could not ask the chip what it holds ({exc}); going by the record", "warning")
            return None
        return held


    def package(self, job: Job) -> bytes:
        """The downloaded (or given) file, its MD5 checked again right now (the file may have changed on disk
        since it was verified) and its signature checked (if a key is set), the trailer removed: an image, or
        an update file (:mod:`notedfu.update.rebuild`)."""
        path = self.staging.paths(job.md5)[2]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise NotedfuError(f"staged image {path} is missing: {exc.strerror}", code="E_STAGING") from exc
        if md5_hex(data) != job.md5:
            self.staging.discard(job.md5)
            if job.source == "NOTECARD":  # the card still has it: read it again on the next attempt
                for name in DOWNLOAD_STAGES:
                    job.stages[name].state = "pending"
            raise NotedfuError(f"the staged image {path} changed on disk since it was verified (MD5 "
                               f"{md5_hex(data)}, not {job.md5}): discarded before it reached the target",
                               code="E_STAGING", permanent=job.source != "NOTECARD")
        return verified_payload(data, self.public_key)

    def payload(self, job: Job) -> bytes:
        """The bytes to flash: the image an update file was rebuilt into, or the staged image itself (each
        checked again against its MD5 right now)."""
        if not job.built:
            return self.package(job)
        md5 = job.built["md5"]
        path = self.staging.paths(md5)[2]
        data = path.read_bytes() if path.exists() else b""
        if md5_hex(data) != md5:
            self.staging.discard(md5)
            job.built, job.stages["verify"].state = {}, "pending"  # rebuilt from the update file next time
            raise NotedfuError(f"the rebuilt image {path} is missing or changed on disk: it is rebuilt from the "
                               "update file on the next attempt", code="E_STAGING")
        return data

    def read_chip(self) -> bytes | None:
        """The chip's image read back, then started again; ``None`` where that cannot be done here (no target,
        no BOOT0/NRST lines — reading would stop the running firmware for good — or a tool that cannot read)."""
        if not self.config.target.spec or not self.lines_wired():
            return None
        driver = self.driver()
        if not driver.reads_chip:
            return None
        with driver:
            driver.connect()
            data = driver.read_image()
            driver.start()
        return data

    def options(self) -> FlashOptions:
        """How the agent flashes: the configured verify and preserved regions; never started here (the boot
        stage starts it)."""
        return FlashOptions(verify=self.config.target.verify, run=False,
                            preserve=[parse_region(r) for r in self.config.target.preserve])


    def driver(self) -> TargetDriver:
        """The configured target's driver (not yet opened)."""
        tc = self.config.target
        if not tc.spec:
            raise NotedfuError("no target configured ([target] spec or --target)", code="E_NO_TARGET")
        return target_driver(tc.spec, TargetOptions(tc.baud, tc.boot0, tc.reset, tc.enter or ENTER_BOOTLOADER,
                                                    tc.run or RUN_APPLICATION), self.events)


    def flash(self, job: Job) -> None:
        """The flash stage: the staged image checked again, the last-known-good kept, then written."""
        self.events.step("flash", "flashing the target")
        image = [Segment(FLASH_BASE, self.payload(job))]
        driver = self.driver()
        driver.check(image, self.options())
        if not driver.reads_chip:
            self.events.message(f"flashing with {driver.name}: it cannot read the chip back, so the image is "
                                "written whatever the chip holds and a firmware that does not confirm cannot be "
                                "rolled back")
        with driver:
            driver.connect()
            if not job.lkg and driver.reads_chip:
                job.lkg = self._keep_last_known_good(driver, job)
            started_before, job.flash_started = job.flash_started, True
            self.store.save(job)
            self.flashing = True
            report = driver.flash(image, self.options())
        if stopping.requested():
            self.events.message(f"{stopping.reason()} came during the flash: the flash was finished first", "warning")
        if report.unchanged and not started_before:  # not: an earlier, interrupted attempt wrote it
            job.unchanged = True
            self.events.message(f"the chip already holds image {job.md5}: nothing was written")


    def _keep_last_known_good(self, driver: TargetDriver, job: Job) -> dict[str, Any]:
        """Before the first byte is written: keep what the chip holds, to roll back to if the new image
        does not confirm — the recorded image if the chip holds it, else the chip's own flash read back."""
        record = self.store.installed()
        md5 = record.get("md5")
        if md5 and md5 != job.md5 and self.staging.paths(md5)[2].exists():
            data = verified_payload(self.staging.paths(md5)[2].read_bytes(), None)
            if driver.holds([Segment(FLASH_BASE, data)], self.options()):
                return {"md5": md5, "version": record.get("version", ""), "from": "record"}
        data = driver.read_image()
        if data is None or md5_hex(data) == job.md5:
            if data is None:
                self.events.message("no last-known-good image: the chip's flash is empty or cannot be read; "
                                    "a firmware that does not confirm cannot be rolled back", "warning")
            return {}
        try:
            driver.check([Segment(FLASH_BASE, data)], FlashOptions())  # read from the chip: it fits; can it boot?
        except NotedfuError as exc:
            self.events.message(f"no last-known-good image: what the chip holds is not a bootable image "
                                f"({exc.message})", "warning")
            return {}
        journal = self.staging.stage_bytes(data, source="CHIP")
        version = firmware_info(data).get("version")
        self.events.message(f"kept the chip's current image ({version or journal.md5}, {len(data)} bytes) "
                            "as the last-known-good")
        return {"md5": journal.md5, "version": version if isinstance(version, str) else "", "from": "chip"}


    def boot(self, job: Job) -> str | None:
        """The boot stage: the driver starts the new firmware (its lines, Go, or the tool's reset)."""
        self.events.step("boot", "starting the new firmware")
        with self.driver() as driver:
            try:
                driver.start()
            except TargetNoSync:
                if not self.resumed:
                    raise
                # No reset line, and the bootloader is silent: an earlier run's Go already started the
                # application before it was interrupted. The confirm stage checks that it runs.
                self.events.message("the bootloader no longer answers: the application already runs", "warning")
        return None


    def confirm(self, job: Job) -> str | None:
        """The confirm stage: the new firmware's banner on the console, or ``Unconfirmed``."""
        if job.unchanged:
            self.events.message("the chip already held this image: nothing new to confirm")
            return "skipped"
        if not self.config.confirm.console:
            self.events.message("no console configured: boot confirmation skipped")
            return "skipped"
        line, pattern = self.watch_banner(job.version)
        if line is None:
            raise Unconfirmed(f"the new firmware did not print /{pattern}/ within {self.config.confirm.timeout:g} s")
        self.events.message(f"the new firmware runs: {line!r}")
        self.events.step("confirm", "the new firmware runs", state="done", line=line)
        return None


    def watch_banner(self, version: str) -> tuple[str | None, str]:
        """The console line where the firmware ``version`` announces itself, and the pattern watched for."""
        from notedfu.update.confirm import watch_console

        console = self.config.confirm.console
        assert console is not None
        pattern = self.config.confirm.pattern.replace("{version}", re.escape(version) if version else ".*")
        self.events.step("confirm", f"waiting for /{pattern}/ on {console}")
        return watch_console(console, pattern, self.config.confirm.timeout, self.config.confirm.baud), pattern


    def lines_wired(self) -> bool:
        """Whether the agent can take a running board back into its bootloader (BOOT0/NRST wired)."""
        return bool(self.config.target.reset) and self.config.target.reset != "none"


    def roll_back(self, job: Job, failure: StageFailed) -> StageFailed:
        """The new image did not confirm: put the last-known-good back, confirm it, never retry this image."""
        lkg, name = job.lkg, job.version or job.md5
        good = lkg.get("version") or lkg["md5"]
        self.events.message(f"{name} did not confirm: rolling back to {good}", "warning")
        try:
            data = verified_payload(self.staging.paths(lkg["md5"])[2].read_bytes(), None)
            if md5_hex(self.staging.paths(lkg["md5"])[2].read_bytes()) != lkg["md5"]:
                raise NotedfuError("the last-known-good image changed on disk", code="E_STAGING")
            with self.driver() as driver:
                driver.connect()
                driver.flash([Segment(FLASH_BASE, data)], self.options())
                driver.start()
            line = self.watch_banner(lkg.get("version", ""))[0] if self.config.confirm.console else None
        except (NotedfuError, OSError) as exc:
            job.rolled_back = {"md5": lkg["md5"], "version": lkg.get("version", ""), "error": str(exc)}
            return StageFailed("confirm", Unconfirmed(
                f"{name} did not confirm, and rolling back to {good} failed: {exc}", permanent=True))
        job.rolled_back = {"md5": lkg["md5"], "version": lkg.get("version", ""), "confirmed": line is not None}
        if line is not None:
            self.events.message(f"the last-known-good firmware runs again: {line!r}")
        self.store.set_installed(lkg.get("version", ""), lkg["md5"])
        self.store.reject(job.md5, f"{name} did not confirm and was rolled back to {good}")
        message = f"{name} did not confirm; rolled back to {good}" + ("" if line is not None or not
                                                                     self.config.confirm.console
                                                                     else f" ({good} did not confirm either)")
        return StageFailed("confirm", Unconfirmed(message, permanent=True))
