"""Events: one JSON object per line for programs, a progress bar for people.

Event types (design §5):

* ``status`` — ``{"type":"status","status":"START|RUN|SUCCESS|FAILURE|IDLE", …}``
* ``step`` — ``{"type":"step","number":3,"step":"transfer","name":"…","percent":42.0,
  "bytes":…,"total":…,"rate":…}`` (rate in bytes per second)
* ``message`` — ``{"type":"message","level":"info|warning|error","text":"…"}``

Every event also carries ``time`` (Unix seconds) and ``source`` (NOTECARD,
LOCAL or IPC: where the image came from).
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any, Callable


Sink = Callable[[dict[str, Any]], None]

STEPS = ("check", "enter_dfu", "transfer", "verify", "exit_dfu", "flash", "boot", "confirm", "report")
"""The stages of an update, in order; ``number`` in step events is the index + 1."""


class Events:
    """Fans events out to any number of sinks."""

    def __init__(self, *sinks: Sink, source: str = "NOTECARD") -> None:
        self.sinks: list[Sink] = list(sinks)
        self.source = source

    def emit(self, kind: str, **fields: Any) -> None:
        """Send one event to every sink; a sink that fails is dropped (with one warning), never the work.

        A reader that went away (``notedfu flash --json | head -c1``) or a full disk under the events file
        must not stop a flash half way.
        """
        event = {"type": kind, "time": round(time.time(), 3), "source": self.source, **fields}
        for sink in list(self.sinks):
            try:
                sink(event)
            except Exception as exc:  # noqa: BLE001 - whatever an output raises, the work goes on
                if sink in self.sinks:
                    self.sinks.remove(sink)
                    self.message(f"an event output failed and was dropped ({type(exc).__name__}: {exc})", "warning")

    def status(self, status: str, **fields: Any) -> None:
        """A job-level status change."""
        self.emit("status", status=status, **fields)

    def step(self, step: str, name: str, *, percent: float | None = None, done: int | None = None,
             total: int | None = None, rate: float | None = None, state: str = "running", **fields: Any) -> None:
        """Progress of one stage."""
        if percent is None and done is not None and total:
            percent = 100.0 * done / total
        self.emit("step", number=STEPS.index(step) + 1 if step in STEPS else 0, step=step, name=name,
                  state=state, percent=None if percent is None else round(percent, 1), bytes=done,
                  total=total, rate=None if rate is None else round(rate, 1), **fields)

    def message(self, text: str, level: str = "info") -> None:
        """A line for the log."""
        self.emit("message", level=level, text=text)


def json_lines_sink(stream: IO[str] = sys.stdout) -> Sink:
    """Write each event as one JSON line, flushed (pipes see it at once)."""
    def sink(event: dict[str, Any]) -> None:
        stream.write(json.dumps(event, separators=(",", ":")) + "\n")
        stream.flush()
    return sink


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


EVENTS_FILE_MAX = 1024 * 1024  # bytes before the events file is rotated (one old file, .1, is kept)


def file_sink(path: str, max_bytes: int = EVENTS_FILE_MAX) -> Sink:
    """Append each event to ``path`` as one JSON line (line-buffered: a crash loses nothing written);
    past ``max_bytes`` the file becomes ``path.1`` (replacing the previous one) and a new one starts."""
    import os

    state = {"stream": open(path, "a", buffering=1)}  # noqa: SIM115 - open for the life of the agent

    def sink(event: dict[str, Any]) -> None:
        stream = state["stream"]
        stream.write(json.dumps(event, separators=(",", ":")) + "\n")
        if stream.tell() > max_bytes:
            stream.close()
            os.replace(path, f"{path}.1")
            state["stream"] = open(path, "a", buffering=1)  # noqa: SIM115
    return sink


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
