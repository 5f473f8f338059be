"""How events look to people: a rich progress bar on a TTY, one line per stage and 10 % in a log.

Sinks of :class:`notedfu.events.Events`, chosen by the command line
(:mod:`notedfu.cli_common`, :mod:`notedfu.cli_update`, :mod:`notedfu.demo`); the
stages that emit the events know nothing of them.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from notedfu.events import STEPS


class RichProgress:
    """A rich progress bar for ``step`` events and coloured ``message`` lines, on a TTY."""

    def __init__(self, stream: IO[str] = sys.stderr) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.console = Console(file=stream)
        self.progress = Progress(TextColumn("{task.description:<12}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=self.console,
                                 transient=False)
        self.tasks: dict[str, Any] = {}
        self._step = ""

    def __call__(self, event: dict[str, Any]) -> None:
        """Render one event."""
        if event["type"] == "step" and event["step"] != self._step:
            self._step = event["step"]
            self.console.print(f"[bold]{event['step']}[/] [dim]{event['name']}[/]", highlight=False)
        if event["type"] == "step" and event.get("total"):
            step = event.get("phase") or event["step"]
            if step not in self.tasks:
                if not self.tasks:
                    self.progress.start()
                self.tasks[step] = self.progress.add_task(step, total=event["total"])
            self.progress.update(self.tasks[step], completed=event.get("bytes") or 0)
        elif event["type"] == "step" and event.get("pages_total") and event.get("pages") == event["pages_total"]:
            # Erase, compare and verify count pages, not bytes: one line when each is done.
            self.console.print(f"  {event.get('phase') or event['step']:<10} {event['pages']} pages", highlight=False)
        elif event["type"] == "message":
            style = {"warning": "yellow", "error": "bold red"}.get(event["level"], "dim")
            self.console.print(f"[{style}]{event['text']}[/]", highlight=False)

    def close(self) -> None:
        """Stop the live display."""
        if self.tasks:
            self.progress.stop()


class GangProgress:
    """One progress line per board while several are flashed at once (``notedfu flash --target A --target B``)."""

    def __init__(self, boards: list[str], stream: IO[str] = sys.stderr) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(file=stream)
        width = max(len(b) for b in boards)
        self.progress = Progress(TextColumn(f"{{task.description:<{width}}}"), TextColumn("{task.fields[phase]:<9}"),
                                 BarColumn(), DownloadColumn(), TimeElapsedColumn(), console=self.console)
        self.tasks = {board: self.progress.add_task(board, total=None, phase="waiting") for board in boards}
        self.progress.start()

    def __call__(self, event: dict[str, Any]) -> None:
        """Render one board's event on its line (warnings above the lines)."""
        task = self.tasks.get(event.get("board", ""))
        if task is None:
            return
        if event["type"] == "step":
            fields: dict[str, Any] = {"phase": event.get("phase") or event["step"]}
            if event.get("total"):
                fields.update(total=event["total"], completed=event.get("done") or event.get("bytes") or 0)
            self.progress.update(task, **fields)
        elif event["type"] == "status" and event["status"] in ("SUCCESS", "FAILURE"):
            self.progress.update(task, phase="done" if event["status"] == "SUCCESS" else "FAILED")
        elif event["type"] == "message" and event["level"] in ("warning", "error"):
            self.console.print(f"[yellow]{event['board']}: {event['text']}[/]", highlight=False)

    def close(self) -> None:
        """Stop the live display."""
        self.progress.stop()


_PRIORITY = {"error": 3, "warning": 4, "info": 6}


class LogSink:
    """Human lines for a log: one per stage, per 10 % of progress, per message and status.

    Under systemd (``$JOURNAL_STREAM`` set) each line starts with its syslog
    priority (``<4>``), which journald reads as the entry's level.
    """

    def __init__(self, stream: IO[str] = sys.stderr, journald: bool | None = None) -> None:
        import os

        self.stream = stream
        self.journald = bool(os.environ.get("JOURNAL_STREAM")) if journald is None else journald
        self._last: tuple[str, int] = ("", -1)
        self._last_status = ""

    def _line(self, text: str, level: str = "info") -> None:
        prefix = f"<{_PRIORITY.get(level, 6)}>" if self.journald else ""
        self.stream.write(f"{prefix}{text}\n")
        self.stream.flush()

    def __call__(self, event: dict[str, Any]) -> None:
        """Render one event, if it is worth a line."""
        if event["type"] == "message":
            self._line(event["text"], event["level"])
        elif event["type"] == "status":
            extra = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "time", "status", "source"))
            line = f"{event['status']} ({event['source']}) {extra}".rstrip()
            if line != self._last_status:  # a daemon polling an idle card says so once, not every poll
                self._last_status = line
                self._line(line, "error" if event["status"] == "FAILURE" else "info")
        elif event["type"] == "step":
            percent = event.get("percent")
            if percent is None and event.get("pages_total"):
                percent = 100.0 * (event.get("pages") or 0) / event["pages_total"]
            bucket = -1 if percent is None else int(percent // 10)
            key = (f"{event['step']}:{event['name']}", bucket)
            if key == self._last:
                return
            self._last = key
            progress = "" if percent is None else f" {percent:.0f}%"
            if event.get("pages_total"):
                progress = f" {event.get('pages') or 0}/{event['pages_total']} pages"
            if event.get("rate"):
                progress += f" ({event['rate'] / 1024:.1f} KiB/s)"
            self._line(f"[{event['number']}/{len(STEPS)}] {event['step']}: {event['name']}{progress}")
