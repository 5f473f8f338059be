"""What every command-line module shares: where events go, how the Notecard and the state directory are
opened from arguments, atomic output files, and a stdout whose reader may go away."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

from notedfu.cli_render import RichProgress
from notedfu.events import Events, json_lines_sink


def events_for(args: argparse.Namespace, source: str = "NOTECARD") -> tuple[Events, Callable[[], None]]:
    """JSON lines with --json or when stdout is not a terminal; a progress bar otherwise."""
    if getattr(args, "json", False) or not sys.stdout.isatty():
        args.json = True
        args.events = Events(json_lines_sink(sys.stdout), source=source)  # main() ends it with FAILURE
        return args.events, lambda: None
    progress = RichProgress(sys.stderr)
    return Events(progress, source=source), progress.close


def check_notecard(args: argparse.Namespace) -> None:
    """Check before touching: the Notecard spec's form and options."""
    from notedfu.notecard.link import ENV_SPEC
    from notedfu.preflight import Problems, notecard_spec

    spec = args.notecard or os.environ.get(ENV_SPEC)
    if spec:
        problems = Problems("E_BAD_SPEC")
        problems.guard("--notecard", notecard_spec, spec)
        problems.raise_if_any()


def open_card(args: argparse.Namespace):
    from notedfu.notecard.link import open_notecard

    check_notecard(args)
    return open_notecard(args.notecard, baud=args.baud, timeout=args.timeout)


def staging_for(args: argparse.Namespace):
    from notedfu.notecard.staging import Staging, default_state_dir

    return Staging(args.state_dir or default_state_dir())


# ------------------------------------------------------------------ commands


class ReaderGoneSafe:
    """Standard output that outlives its reader: ``notedfu flash --json | head -c1`` must not stop a flash half
    way, nor end in a traceback. Once the pipe breaks, output goes to /dev/null and the work goes on."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.broken = False

    def _gone(self) -> None:
        self.broken = True
        try:  # what the real stream still buffers, and Python's flush at exit, go nowhere instead of raising
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
        except (OSError, ValueError):
            pass

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self.stream.write(text)
            except (BrokenPipeError, ValueError):
                self._gone()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                self._gone()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
