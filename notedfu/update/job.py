"""Update jobs: one per offered image, with states and stages, persisted atomically.

States: ``idle`` → ``downloading`` → ``ready`` (waiting on policy) → ``processing``
→ ``success`` | ``fail`` | ``unconfirmed``; or ``up_to_date``; or ``superseded`` (the card
stopped offering the image while the job waited to try again). A transient failure leaves the
job ``processing``, its failed stage ``error``, and ``retry_at`` set: the next attempt starts at
that stage. Stages inside
``processing`` (in order): check, enter_dfu, transfer, verify, exit_dfu,
flash, boot, confirm, report — each ``pending | running | done | error |
skipped``, errors with a stable ``code`` and a ``message``.

Files under the state directory: ``jobs/<id>.json`` (every job),
``jobs/current`` (the id of the job in progress), ``installed.json`` (the
version the target runs, as last confirmed), ``pending.json`` (the image that
waits for approval under the manual policy), ``approved/<md5>`` (an
approval: it names the one image it lets through) and ``rejected/<md5>`` (an
image that was rolled back: not installed again on its own).
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from notedfu.checksums import is_md5
from notedfu.errors import UsageError
from notedfu.events import STEPS
from notedfu.files import read_json, write_json_atomic
from notedfu.notecard.staging import quarantine

TERMINAL = ("success", "fail", "unconfirmed", "up_to_date", "superseded")


@dataclass
class Stage:
    """One stage of a job."""

    state: str = "pending"
    code: str = ""
    message: str = ""
    started: float = 0.0
    ended: float = 0.0


@dataclass
class Job:
    """One offered image and what became of it."""

    id: str
    md5: str
    length: int
    version: str = ""
    source: str = "NOTECARD"
    name: str = ""
    state: str = "processing"
    stages: dict[str, Stage] = field(default_factory=lambda: {name: Stage() for name in STEPS})
    error: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    retry_at: float = 0.0  # after a transient failure: not before this (Unix time)
    unchanged: bool = False  # the chip already held the image: nothing was written
    flash_started: bool = False  # an attempt began writing the target (a later one may find it all there)
    lkg: dict[str, Any] = field(default_factory=dict)  # the last-known-good image (md5, version), kept before flashing
    rolled_back: dict[str, Any] = field(default_factory=dict)  # what the chip was rolled back to, and whether it confirmed
    built: dict[str, Any] = field(default_factory=dict)  # an update file's rebuilt image (md5, length, encoding, base)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @classmethod
    def new(cls, md5: str, length: int, **fields_: Any) -> "Job":
        """A fresh job for an image."""
        return cls(id=f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}", md5=md5, length=length, **fields_)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Job":
        """Rebuild a job from its JSON."""
        stages = {name: Stage(**value) for name, value in data.get("stages", {}).items()}
        return cls(**{**data, "stages": {name: stages.get(name, Stage()) for name in STEPS}})

    @property
    def terminal(self) -> bool:
        """Whether nothing more will happen to this job."""
        return self.state in TERMINAL

    def next_stage(self) -> str | None:
        """The first stage not yet done or skipped."""
        return next((n for n in STEPS if self.stages[n].state not in ("done", "skipped")), None)


DOWNLOAD_STAGES = ("enter_dfu", "transfer", "verify", "exit_dfu")
"""The stages one download covers (the card is in DFU mode from enter_dfu to exit_dfu)."""

def job_summary(job: Job | None) -> dict[str, Any] | None:
    """The few fields of a job that `notedfu status` shows for the last one."""
    if job is None:
        return None
    return {"id": job.id, "state": job.state, "source": job.source, "md5": job.md5, "version": job.version,
            "unchanged": job.unchanged, "error": job.error, "rolled_back": job.rolled_back}


def load_job(path: Path) -> Job | None:
    """The job in ``path``, or ``None`` if the file is missing, torn, or has fields of the wrong type."""
    data = read_json(path)
    if not data:
        return None
    try:
        job = Job.from_dict(data)
        valid = (isinstance(job.id, str) and is_md5(job.md5) and isinstance(job.length, int)
                 and job.state in (*TERMINAL, "processing") and isinstance(job.attempts, int)
                 and isinstance(job.retry_at, (int, float)) and isinstance(job.error, dict)
                 and isinstance(job.lkg, dict) and isinstance(job.rolled_back, dict) and isinstance(job.built, dict)
                 and (not job.built or is_md5(job.built.get("md5")))
                 and all(isinstance(s.state, str) for s in job.stages.values()))
    except (TypeError, ValueError, AttributeError, KeyError):
        return None
    return job if valid else None


class JobStore:
    """Jobs and the installed version, in the state directory."""

    def __init__(self, root: Path, warn: Callable[[str], None] | None = None) -> None:
        self.warn = warn
        self.dir = Path(root) / "jobs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.installed_path = Path(root) / "installed.json"
        self.pending_path = Path(root) / "pending.json"
        self.approved_dir = Path(root) / "approved"
        self.rejected_dir = Path(root) / "rejected"

    def save(self, job: Job) -> None:
        """Write the job durably and make it current unless it is over."""
        job.updated = time.time()
        write_json_atomic(self.dir / f"{job.id}.json", asdict(job))
        if job.terminal:
            (self.dir / "current").unlink(missing_ok=True)
        else:
            write_json_atomic(self.dir / "current", {"id": job.id})

    def current(self) -> Job | None:
        """The job in progress, if any; a job file that cannot be trusted is moved aside (with a warning)."""
        pointer_path = self.dir / "current"
        if not pointer_path.exists():
            return None
        pointer = read_json(pointer_path)
        job_id = pointer.get("id") if pointer else None
        if not isinstance(job_id, str) or not re.fullmatch(r"[0-9A-Za-z-]{1,64}", job_id):
            quarantine(pointer_path, "does not name a job", self.warn)
            return None
        path = self.dir / f"{job_id}.json"
        job = load_job(path)
        if job is None:
            if path.exists():
                quarantine(path, "is not a usable job (torn, garbage or wrong types)", self.warn)
            quarantine(pointer_path, f"named job {job_id}, which cannot be used", self.warn)
        return job

    def latest(self) -> Job | None:
        """The most recently updated job."""
        jobs = [job for path in self.dir.glob("*.json") if (job := load_job(path)) is not None]
        return max(jobs, key=lambda j: j.updated, default=None)

    def installed(self) -> dict[str, Any]:
        """``{"version": …, "md5": …}`` of what the target runs, as last confirmed."""
        return read_json(self.installed_path) or {}

    def set_installed(self, version: str, md5: str, package: str = "") -> None:
        """Record what the target now runs: the image ``md5``, and the update file it came in (``package``)."""
        record = {"version": version, "md5": md5, "time": time.time()}
        write_json_atomic(self.installed_path, {**record, "package": package} if package else record)

    def forget_installed(self) -> None:
        """The chip does not hold what the record says (a board swapped, reflashed by hand): drop the record."""
        self.installed_path.unlink(missing_ok=True)

    # ------------------------------------------------------------ rolled-back images
    def reject(self, md5: str, reason: str) -> None:
        """Never install this image again on its own (it was rolled back)."""
        self.rejected_dir.mkdir(exist_ok=True)
        write_json_atomic(self.rejected_dir / md5, {"md5": md5, "reason": reason, "time": time.time()})

    def rejected(self, md5: str) -> dict[str, Any]:
        """Why this image was rejected, or ``{}``."""
        return read_json(self.rejected_dir / md5) or {} if is_md5(md5) else {}

    # ------------------------------------------------------------ manual policy
    def pending(self) -> dict[str, Any]:
        """The image waiting for approval: ``{"md5", "version", "length"}``, or ``{}``."""
        return read_json(self.pending_path) or {}

    def set_pending(self, md5: str, version: str, length: int) -> None:
        """Announce an image that waits for approval."""
        if self.pending().get("md5") != md5:
            write_json_atomic(self.pending_path, {"md5": md5, "version": version, "length": length,
                                                  "since": time.time()})

    def clear_pending(self) -> None:
        """Nothing waits for approval any more."""
        self.pending_path.unlink(missing_ok=True)

    def approve(self, md5: str) -> str:
        """Let the image with this MD5 (and no other) be installed; return a note for the user, or ``""``."""
        md5 = md5.lower()
        if not is_md5(md5):
            raise UsageError(f"not an image MD5: {md5!r} (32 hex digits, as `notedfu status` shows)",
                             code="E_BAD_MD5")
        self.approved_dir.mkdir(exist_ok=True)
        write_json_atomic(self.approved_dir / md5, {"md5": md5, "time": time.time()})
        if self.pending().get("md5") == md5:
            return ""
        return "no image with this MD5 waits now; the approval is kept for when one does"

    def take_approval(self, md5: str) -> bool:
        """Whether this image is approved; the approval is used up."""
        path = self.approved_dir / md5
        if not path.exists():
            return False
        path.unlink()
        return True


_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?")


def compare_versions(a: str, b: str) -> int | None:
    """-1, 0 or 1 for dotted versions; ``None`` when either does not parse."""
    ma, mb = _VERSION.match(a or ""), _VERSION.match(b or "")
    if not ma or not mb:
        return None
    ta = tuple(int(x or 0) for x in ma.groups())
    tb = tuple(int(x or 0) for x in mb.groups())
    return (ta > tb) - (ta < tb)
