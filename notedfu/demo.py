"""``notedfu demo``: a whole update on the simulated rig, for a newcomer to watch.

The simulated Notecard holds demo firmware 1.1.0 (as if Notehub had delivered
it) on one pseudo-terminal, the emulated STM32F100 bootloader on another has
1.0.0 in its flash; the agent — the very code ``notedfu update`` runs — takes
the card to DFU mode, reads and verifies the image, hands the card back,
flashes and verifies the chip, starts it, and QEMU boots the chip's flash to
show the 1.1.0 banner; then the result is reported to Notehub. A summary
follows: each stage's time, bytes and rate, the card's mode before and after,
what Notehub was told, what the target holds, what it printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from notedfu.config import Config
from notedfu.errors import ExitCode, Interrupted, UsageError
from notedfu.cli_render import LogSink, RichProgress
from notedfu.events import STEPS, Events, json_lines_sink
from notedfu.sim.rig import BANNER, FIRMWARE_DIR, RigSetup, SimulatedRig
from notedfu.sim.timing import PROFILES

QEMU_HINT = "sudo apt-get install qemu-system-arm"


@dataclass(frozen=True)
class Scenario:
    """What the demo installs over what."""

    product: str  # the firmware's file stem under firmware/prebuilt
    old: str
    new: str
    banner: str
    delta: bool = False  # the card offers `notedfu pack NEW --from OLD` instead of the .bin

    def images(self, firmware: Path) -> tuple[bytes, bytes, bytes, str]:
        """(old image, new image, what the card offers, its name)."""
        old = (firmware / f"{self.product}-{self.old}.bin").read_bytes()
        new = (firmware / f"{self.product}-{self.new}.bin").read_bytes()
        if not self.delta:
            return old, new, new, f"{self.product}-{self.new}.bin"
        from notedfu.protocol.ndfu import pack

        return old, new, pack(new, old), f"{self.product}-{self.new}.ndfu"


PLAIN = Scenario("demo", "1.0.0", "1.1.0", BANNER)
DELTA = Scenario("sensor", "2.0.0", "2.0.1", "notedfu-sensor {version} booted", delta=True)


def add_parser(sub: Any) -> None:
    """Register ``notedfu demo``."""
    demo = sub.add_parser("demo", help="a whole update on the simulated rig: Notecard → agent → STM32, booted "
                                       "in QEMU")
    demo.add_argument("--json", action="store_true", help="JSON-lines events on stdout, then a summary line")
    demo.add_argument("--profile", default="aux115200", choices=sorted(PROFILES),
                      help="the Notecard's link (default aux115200: the Notecarrier's AUX UART)")
    demo.add_argument("--no-qemu", action="store_true", help="skip the boot check even if QEMU is installed")
    demo.add_argument("--delta", action="store_true",
                      help="the delta path: the card offers an update file (notedfu pack --from) that takes the "
                           "sensor firmware from 2.0.0 to 2.0.1; only the pages that differ are written")
    demo.add_argument("--workdir", type=Path, metavar="DIR",
                      help="keep the rig's files here (flash image, state, jobs) instead of a temporary directory")
    demo.add_argument("--firmware", type=Path, default=FIRMWARE_DIR, metavar="DIR",
                      help="where demo-1.0.0.bin and demo-1.1.0.bin (sensor-2.0.x.bin with --delta) are "
                           "(default: the checkout's firmware/prebuilt)")
    demo.set_defaults(run=cmd_demo)


@dataclass
class Recorder:
    """An events sink that keeps what the summary needs."""

    first: dict[str, float] = field(default_factory=dict)  # stage → time of its first step event
    bytes: dict[str, int] = field(default_factory=dict)  # stage → bytes it moved
    boot_line: str = ""
    pages: dict[str, int] = field(default_factory=dict)  # the flash stage's pages written and unchanged
    ended: float = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        """Note one event."""
        if event["type"] == "step":
            self.first.setdefault(event["step"], event["time"])
            if event.get("bytes") and event.get("phase", "write") == "write":
                self.bytes[event["step"]] = event["bytes"]
            if event.get("line"):  # the confirm stage saw the banner
                self.boot_line = event["line"]
            if event["step"] == "flash" and event.get("state") == "done" and "pages_written" in event:
                self.pages = {k: event[k] for k in ("pages_written", "pages_unchanged")}
        elif event["type"] == "status" and event["status"] in ("SUCCESS", "FAILURE"):
            self.ended = event["time"]

    def stages(self, job: Any) -> list[dict[str, Any]]:
        """Every stage: its state in the job, and for those that ran, wall time, bytes and rate."""
        started = sorted((t, s) for s, t in self.first.items() if s in STEPS)
        timed: dict[str, float] = {}
        for i, (t, stage) in enumerate(started):
            end = started[i + 1][0] if i + 1 < len(started) else (self.ended or time.time())
            timed[stage] = max(0.0, end - t)
        rows = []
        for stage in STEPS:
            seconds, moved = timed.get(stage), self.bytes.get(stage)
            rows.append({"stage": stage, "state": job.stages[stage].state if job else "interrupted",
                         "seconds": None if seconds is None else round(seconds, 3), "bytes": moved,
                         "rate": round(moved / seconds, 1) if moved and seconds else None})
        return rows


def _events(args: argparse.Namespace) -> tuple[Events, Callable[[], None]]:
    if args.json:
        return Events(json_lines_sink(sys.stdout)), lambda: None
    if sys.stdout.isatty():
        progress = RichProgress(sys.stdout)
        return Events(progress), progress.close
    return Events(LogSink(sys.stdout, journald=False)), lambda: None


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; the exit code is the update's (README, "Exit codes"), 130 on Ctrl-C."""
    from notedfu.update.agent import Updater

    scenario = DELTA if args.delta else PLAIN
    try:
        old, new, offered, offered_name = scenario.images(args.firmware)
    except OSError as exc:
        raise UsageError(f"demo firmware not found in {args.firmware} ({exc.strerror}): run from a checkout, "
                         "or give --firmware DIR", code="E_IMAGE_FILE") from exc
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="notedfu-demo-"))
    events, close = _events(args)
    recorder = Recorder()
    events.sinks.append(recorder)
    rig = SimulatedRig(workdir, RigSetup(offered, old, offered_name=offered_name, card={"profile": args.profile},
                                         lines=True))
    outcome, interrupted, why = None, False, None
    try:
        console = None if args.no_qemu else rig.console
        what = (f"an update file ({len(offered)} bytes: a delta taking {scenario.product} {scenario.old} to "
                f"{scenario.new}, {len(new)} bytes)" if scenario.delta else f"{offered_name} ({len(new)} bytes)")
        events.message(f"simulated Notecard on {rig.notecard_port} ({args.profile}), holding {what} as if Notehub "
                       f"had delivered it; hub mode {rig.mode_found}")
        events.message(f"emulated STM32F100 on {rig.target_port} (ROM bootloader; BOOT0 and NRST on a simulated "
                       f"GPIO chip), running {scenario.product}-{scenario.old}.bin")
        if console is None:
            why = "--no-qemu" if args.no_qemu else f"qemu-system-arm is not installed ({QEMU_HINT} to see it boot)"
            events.message(f"the boot check is skipped: {why}", "warning")
        outcome = Updater(_config(rig, console, workdir, scenario.banner), events).run()
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
    finally:
        close()
        summary = _summary(rig, recorder, outcome, interrupted, why, scenario, old, new)
        rig.close()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        events.emit("summary", **summary)
    else:
        print(_render(summary, args.workdir))
    if interrupted:
        return int(ExitCode.INTERRUPTED)
    return outcome.exit()


def _config(rig: SimulatedRig, console: str | None, workdir: Path, banner: str) -> Config:
    config = Config()
    config.notecard.spec = rig.notecard_port
    config.target.spec = rig.target_port
    config.target.boot0, config.target.reset = rig.boot0_line, rig.reset_line
    config.confirm.console = console
    config.confirm.pattern = banner
    config.confirm.timeout = 20.0
    config.agent.state_dir = str(workdir / "state")
    return config


def _summary(rig: SimulatedRig, recorder: Recorder, outcome: Any, interrupted: bool, boot_skipped: str | None,
             scenario: Scenario, old: bytes, new: bytes) -> dict[str, Any]:
    job = outcome.job if outcome else None
    flash = rig.flash_file.read_bytes()
    return {
        "outcome": "interrupted" if interrupted else outcome.state if outcome else "error",
        "job": job.id if job else None,
        "error": job.error if job and job.error else None,
        "stages": recorder.stages(job),
        "notecard": {"port": rig.notecard_port, "mode_before": rig.mode_found, "mode_after": rig.card.hub_mode,
                     "dfu": rig.card.dfu_state},
        "notehub": rig.card.reports,
        "target": {"port": rig.target_port, "holds": scenario.new if flash.startswith(new) else
                   scenario.old if flash.startswith(old) else "erased first page" if flash[:8] == b"\xff" * 8
                   else "neither image", "running": rig.chip.running_app, **recorder.pages},
        "boot": {"checked": boot_skipped is None, "line": recorder.boot_line or None, "skipped": boot_skipped},
        "next": _next_step(interrupted, outcome, rig),
    }


def _next_step(interrupted: bool, outcome: Any, rig: SimulatedRig) -> str | None:
    """What the user can do now, when the demo did not end in success."""
    if interrupted:
        card = "the Notecard was handed back" if rig.card.hub_mode != "dfu" else "the Notecard is still in DFU mode"
        return (f"stopped on request; {card}. Run `notedfu demo` again (with --workdir DIR, a second run "
                "continues the same job)")
    if outcome is None or outcome.state == "success":
        return None
    if outcome.state == "up_to_date":
        return None
    return "see the error above; NOTEDFU_DEBUG=1 shows a traceback if it is E_INTERNAL"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _render(summary: dict[str, Any], workdir: Path | None) -> str:
    lines = ["", f"notedfu demo: {summary['outcome']}" + (f" (job {summary['job']})" if summary["job"] else "")]
    if summary["error"]:
        lines.append(f"  error      {summary['error']['code']} in {summary['error']['stage']}: "
                     f"{summary['error']['message']}")
    lines.append(f"  {'stage':<10} {'state':<8} {'time':>8} {'bytes':>7} {'rate':>11}")
    for row in summary["stages"]:
        rate = f"{row['rate'] / 1024:.1f} KiB/s" if row["rate"] else ""
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.2f} s"
        lines.append(f"  {row['stage']:<10} {row['state']:<8} {seconds:>8} {row['bytes'] or '':>7} {rate:>11}")
    card = summary["notecard"]
    lines.append(f"  Notecard   hub mode {card['mode_after']} (found in {card['mode_before']}), host DFU {card['dfu']}")
    told = "; ".join("dfu.status " + " ".join(f"{k}:{json.dumps(v)}" for k, v in report.items())
                     for report in summary["notehub"]) or "nothing"
    lines.append(f"  Notehub    {told}")
    target = summary["target"]
    pages = (f"; {_count(target['pages_written'], 'page')} written, {target['pages_unchanged']} unchanged"
             if "pages_written" in target else "")
    lines.append(f"  target     flash holds {target['holds']}" + (", application running" if target["running"] else "")
                 + pages)
    boot = summary["boot"]
    if boot["line"]:
        lines.append(f"  boot       QEMU printed: {boot['line']}")
    else:
        lines.append("  boot       " + ("not confirmed" if boot["checked"] else f"not checked: {boot['skipped']}"))
    if summary.get("next"):
        lines.append(f"  next       {summary['next']}")
    if workdir:
        lines.append(f"  files      {workdir} (flash.bin, state/jobs/)")
    return "\n".join(line.rstrip() for line in lines)
