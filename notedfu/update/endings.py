"""How a job ends, and who hears of it: success, up to date, retry later, superseded, failed, refused.

Only a permanent failure is reported to Notehub (``dfu.status stop:true err:…``
deletes the card's copy); a transient one keeps everything and schedules the
next attempt. The orchestrator (:mod:`notedfu.update.agent`) decides which
ending a job gets; this module carries it out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from notedfu.config import Config
from notedfu.errors import ExitCode, NotedfuError, StageFailed, Unconfirmed
from notedfu.events import STEPS, Events
from notedfu.notecard.client import CardClient
from notedfu.update.job import Job, JobStore, job_summary


@dataclass
class Outcome:
    """What a cycle ended in."""

    state: str  # idle, downloading, ready (awaiting approval), or a job's terminal state
    job: Job | None = None
    detail: str = ""
    exit_code: int = 0

    @property
    def failed(self) -> bool:
        """Whether the cycle ended in a failure of the job (not merely "nothing to do" or "later")."""
        return self.state not in _STATE_EXIT

    def exit(self) -> int:
        """The process exit code this ending means (README, "Events and exit codes"): the one place it is
        decided, for ``notedfu update`` and ``notedfu demo`` alike."""
        if self.state in _STATE_EXIT:
            return int(_STATE_EXIT[self.state])
        if self.state == "unconfirmed":
            return int(ExitCode.UNCONFIRMED)
        return self.exit_code or int(ExitCode.FAILURE)


_STATE_EXIT = {"success": ExitCode.OK, "up_to_date": ExitCode.UP_TO_DATE, "ready": ExitCode.AWAITING_APPROVAL,
               "idle": ExitCode.NOT_READY, "downloading": ExitCode.NOT_READY, "retry": ExitCode.TRY_LATER,
               "superseded": ExitCode.TRY_LATER}


def clock(when: float) -> str:
    """HH:MM:SS of a Unix time, for messages."""
    return time.strftime("%H:%M:%S", time.localtime(when))


class JobEndings:
    """The endings of jobs (and of offers that never became one)."""

    def __init__(self, config: Config, events: Events, store: JobStore,
                 client: Callable[[], CardClient | None]) -> None:
        self.config = config
        self.events = events
        self.store = store
        self.client = client  # the Notecard of the current cycle (None without one)

    def up_to_date(self, job: Job) -> Outcome:
        job.state = "up_to_date"
        for name in STEPS:
            job.stages[name].state = "skipped"
        if job.source == "NOTECARD":
            self.report_stop(job, ok=True, text=f"already running {job.version}")
        self.store.clear_pending()
        self.store.save(job)
        self.events.status("SUCCESS", state="up_to_date", job=job.id, version=job.version,
                           result=job_summary(job))
        return Outcome("up_to_date", job)

    def refuse_rejected(self, job: Job, rejected: dict[str, Any]) -> Outcome:
        """An image that was rolled back is offered again: not retried unless forced; Notehub hears why."""
        text = f"E_ROLLED_BACK: image {job.md5} was rolled back before ({rejected.get('reason', '')}); " \
               "install it with --force"
        self.events.message(text, "error")
        if job.source == "NOTECARD" and self.client() is not None:
            self.report_stop(job, ok=False, text=text)
        self.events.status("FAILURE", state="fail", failure="permanent",
                           error={"stage": "check", "code": "E_ROLLED_BACK", "message": text})
        return Outcome("fail", None, text, int(ExitCode.FAILURE))

    def report_stop(self, job: Job, ok: bool, text: str) -> None:
        req: dict[str, Any] = {"req": "dfu.status", "name": "user", "stop": True}
        req["status" if ok else "err"] = text[:200]
        self.client().request(req)

    def report_pending(self, job: Job, failure: StageFailed) -> Outcome:
        """The new firmware is installed but Notehub has not heard: keep the job open for the next run."""
        detail = f"installed, but not reported to Notehub ({failure}); the next run reports it"
        self.events.message(detail, "error")
        return Outcome("processing", job, detail, int(failure.exit_code))

    def retry_later(self, job: Job, failure: StageFailed) -> Outcome:
        """A transient failure: keep everything, tell Notehub nothing, try again after a backoff."""
        agent = self.config.agent
        delay = min(agent.retry_backoff_max, agent.retry_backoff * 2 ** max(0, job.attempts - 1))
        job.retry_at = time.time() + delay
        job.error = {"stage": failure.stage, "code": failure.code, "message": failure.message, "kind": "transient"}
        self.store.save(job)  # still processing: the failed stage says "error", the next attempt starts there
        detail = (f"{failure.code}: {failure.message} — transient: the images are kept, attempt {job.attempts} of "
                  f"{agent.retry_limit}, next at {clock(job.retry_at)}")
        self.events.message(detail, "warning")
        self.events.status("FAILURE", job=job.id, state="retry", failure="transient", error=job.error,
                           attempt=job.attempts, attempts=agent.retry_limit, retry_at=round(job.retry_at, 3))
        return Outcome("retry", job, detail, int(ExitCode.TRY_LATER))

    def supersede(self, job: Job, failure: StageFailed) -> Outcome:
        """The card moved on to another image (or none): drop the job, report nothing about it."""
        job.state = "superseded"
        job.error = {"stage": failure.stage, "code": failure.code, "message": failure.message, "kind": "superseded"}
        self._skip_pending(job)
        self.store.save(job)
        self.events.status("FAILURE", job=job.id, state=job.state, failure="superseded", error=job.error)
        return Outcome("superseded", job, failure.message, int(ExitCode.TRY_LATER))

    @staticmethod
    def _skip_pending(job: Job) -> None:
        for name in STEPS:
            if job.stages[name].state in ("pending", "error") and name != job.error.get("stage"):
                job.stages[name].state = "skipped"

    def refuse_offer(self, exc: NotedfuError) -> Outcome:
        """The card offers something that cannot be an image: permanent, reported once, no job."""
        if not exc.permanent:
            raise exc
        try:
            self.client().request({"req": "dfu.status", "name": "user", "stop": True,
                                 "err": f"{exc.code}: {exc.message}"[:200]})
        except NotedfuError as report_error:
            self.events.message(f"could not report the bad image to Notehub: {report_error}", "error")
        error = {"stage": "check", "code": exc.code, "message": exc.message, "kind": "permanent"}
        self.events.status("FAILURE", state="fail", failure="permanent", error=error)
        return Outcome("fail", None, exc.message, int(exc.exit_code))

    def fail(self, job: Job, failure: StageFailed) -> Outcome:
        """A permanent failure (or the retry budget spent): the job ends and Notehub hears, once."""
        job.state = "unconfirmed" if isinstance(failure.error, Unconfirmed) and not job.rolled_back else "fail"
        message = failure.message
        if not failure.permanent:
            message += f" (gave up after {job.attempts} attempts)"
        job.error = {"stage": failure.stage, "code": failure.code, "message": message, "kind": "permanent"}
        job.retry_at = 0.0
        self._skip_pending(job)
        if job.source == "NOTECARD" and self.client() is not None:
            try:
                self.report_stop(job, ok=False, text=f"{failure.code}: {message}")
                job.stages["report"].state = "done"
            except NotedfuError as exc:
                self.events.message(f"could not report the failure to Notehub: {exc}", "error")
        self.store.save(job)
        self.events.status("FAILURE", job=job.id, state=job.state, failure="permanent", error=job.error)
        return Outcome(job.state, job, message, int(failure.exit_code))
