"""Events: what happened, as one JSON object per line; the stages only emit them, sinks observe.

The renderers for people (a progress bar, log lines) are the command line's:
:mod:`notedfu.cli_render`.

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
