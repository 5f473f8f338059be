"""The policy's verdict on an offered image: install it, it is already installed, or it is a downgrade."""

from __future__ import annotations

from typing import Callable

from notedfu.config import PolicyConfig
from notedfu.events import Events
from notedfu.update.job import Job, JobStore, compare_versions


def decide(job: Job, store: JobStore, policy: PolicyConfig, events: Events, *, force: bool,
           chip_holds: Callable[[str], bool | None]) -> str:
    """``install``, ``up_to_date`` or ``downgrade``: the record proposes, the chip decides.

    The installed record is only a fast path. Where it would stop an
    update (the same image; an older version), the chip is asked whether it
    really holds the recorded image — when a target is configured and that
    image is still staged — and a record the chip contradicts (a board
    swapped or reflashed by hand) is dropped. A different image of the same
    version is installed: the flash stage compares it with the chip anyway.
    """
    installed = store.installed()
    if force or not installed.get("md5"):
        return "install"
    order = compare_versions(job.version, installed.get("version", ""))
    if job.md5 in (installed["md5"], installed.get("package")):  # the image, or the update file it came in
        verdict = "up_to_date"
    elif order == -1 and not policy.allow_downgrade:
        verdict = "downgrade"
    else:
        return "install"
    held = chip_holds(installed["md5"])
    if held is False:
        events.message(f"the chip does not hold the recorded {installed.get('version') or installed['md5']} "
                            "(a board swapped or reflashed?): the record is dropped", "warning")
        store.forget_installed()
        return "install"
    return verdict

# ------------------------------------------------------------ stages
