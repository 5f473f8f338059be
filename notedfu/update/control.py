"""The control socket of ``notedfu run``: newline-delimited JSON over a Unix stream socket.

Each connection carries one request, a JSON object on one line (at most
``MAX_REQUEST`` bytes), and gets one JSON answer line — except ``subscribe``,
whose answer is followed by one line per event until the client hangs up, and
``install`` with ``"stream": true``, whose request line is followed by exactly
``length`` raw image bytes.

===========================================================  ==========================================
request                                                      answer
===========================================================  ==========================================
``{"cmd": "status"}``                                        ``{"ok": true, "state": …, "job": {…}, "subscribers": N, …}``
``{"cmd": "install", "path": "/abs/image.bin"}``             ``{"ok": true, "md5": …}`` or ``E_BUSY``
``{"cmd": "install", "stream": true, "length": N}`` + bytes  same
``{"cmd": "approve", "md5": "…"}``                           ``{"ok": true}``
``{"cmd": "cancel"}``                                        ``{"ok": true}`` or ``E_TOO_LATE`` …
``{"cmd": "subscribe"}``                                     ``{"ok": true}``, then events
===========================================================  ==========================================

Failures answer ``{"ok": false, "code": "E_…", "error": "…"}``. Nothing a
client sends can stop the server: every connection runs in its own thread and
every error is answered or logged, never raised.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import socketserver
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from notedfu.errors import Busy, ControlError, NoDaemon, NotedfuError, UsageError
from notedfu.update.peer import Peer

MAX_REQUEST = 64 * 1024
COMMANDS = ("status", "install", "approve", "cancel", "subscribe")
ENV_SOCKET = "NOTEDFU_SOCKET"
DEFAULT_SOCKET = "/run/notedfu/notedfu.sock"


class Connection:
    """One client, as the handler sees it."""

    def __init__(self, rfile: Any, wfile: Any, peer: Peer | None = None) -> None:
        self.rfile = rfile
        self.wfile = wfile
        self.peer = peer  # who connected (SO_PEERCRED), None where the platform cannot say

    def send(self, message: dict[str, Any]) -> None:
        """One JSON line to the client (raises ``OSError`` once it has gone)."""
        self.wfile.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        self.wfile.flush()

    def read_exact(self, length: int) -> bytes:
        """Exactly ``length`` bytes that follow the request line."""
        data = self.rfile.read(length)
        if len(data) != length:
            raise ControlError(f"the stream ended after {len(data)} of {length} bytes", code="E_SHORT_STREAM")
        return data


class Handler(Protocol):
    """What the daemon provides to the server."""

    def handle(self, request: dict[str, Any], connection: Connection) -> dict[str, Any]:
        """Answer one request (raise ``ControlError`` to refuse it)."""

    def subscribe(self) -> "queue.Queue[dict[str, Any] | None]":
        """A queue that receives every event; ``None`` means the daemon stops."""

    def unsubscribe(self, events: "queue.Queue[dict[str, Any] | None]") -> None:
        """Stop feeding that queue."""


def parse_request(line: bytes) -> dict[str, Any]:
    """Validate one request line."""
    if len(line) > MAX_REQUEST or not line.endswith(b"\n"):
        raise ControlError(f"request longer than {MAX_REQUEST} bytes or not ended by a newline",
                           code="E_REQUEST_TOO_LARGE" if len(line) > MAX_REQUEST else "E_BAD_REQUEST")
    try:
        request = json.loads(line)
    except ValueError as exc:
        raise ControlError(f"request is not JSON ({exc})") from None
    if not isinstance(request, dict):
        raise ControlError("request must be a JSON object")
    if request.get("cmd") not in COMMANDS:
        raise ControlError(f"unknown cmd {str(request.get('cmd'))[:40]!r} (known: {', '.join(COMMANDS)})",
                           code="E_UNKNOWN_CMD")
    return request


def error_answer(exc: NotedfuError) -> dict[str, Any]:
    """The answer line for a refused request."""
    return {"ok": False, "code": exc.code, "error": exc.message}


class _RequestHandler(socketserver.StreamRequestHandler):
    server: "ControlServer"
    timeout = 30.0  # a client that connects and says nothing does not hold a thread forever

    def handle(self) -> None:
        connection = Connection(self.rfile, self.wfile, Peer.of(self.request))
        try:
            request = parse_request(self.rfile.readline(MAX_REQUEST + 1))
            if request["cmd"] == "subscribe":
                self._stream_events(connection)
                return
            answer = self.server.handler.handle(request, connection)
        except NotedfuError as exc:
            answer = error_answer(exc)
        except OSError:
            return  # the client timed out or hung up mid-request
        except Exception as exc:  # a bug answering one client must not take the daemon down
            answer = error_answer(NotedfuError(f"{type(exc).__name__}: {exc}", code="E_INTERNAL"))
        try:
            connection.send(answer)
        except OSError:
            pass  # the client left before its answer

    def _stream_events(self, connection: Connection) -> None:
        events = self.server.handler.subscribe()
        try:
            connection.send({"ok": True})
            while True:
                event = events.get()
                if event is None:
                    return
                connection.send(event)
        except OSError:
            return  # the subscriber hung up
        finally:
            self.server.handler.unsubscribe(events)


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The listening socket: mode 0600, stale sockets replaced, live ones refused."""

    daemon_threads = True

    def __init__(self, path: str | Path, handler: Handler) -> None:
        self.path = Path(path)
        self.handler = handler
        _claim(self.path)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            super().__init__(str(self.path), _RequestHandler)
        finally:
            os.umask(old_umask)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="notedfu-control", daemon=True)

    def start(self) -> "ControlServer":
        """Serve in a background thread."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove the socket file."""
        self.shutdown()
        self.server_close()
        self.path.unlink(missing_ok=True)


def _claim(path: Path) -> None:
    """Make ``path`` free for a new socket, refusing if another daemon answers there."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {path.parent} for the control socket: {exc.strerror}",
                         code="E_SOCKET") from exc
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"{path} exists and is not a socket", code="E_SOCKET_PATH")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # left by a daemon that died
        return
    finally:
        probe.close()
    raise Busy(f"a notedfu daemon already listens on {path}")


class ControlClient:
    """Talks to a running daemon."""

    def __init__(self, path: str | Path | None = None, timeout: float = 10.0) -> None:
        self.path = str(path or os.environ.get(ENV_SOCKET) or DEFAULT_SOCKET)
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise NoDaemon(f"no notedfu daemon on {self.path} ({exc.strerror or exc})") from None
        return sock

    def available(self) -> bool:
        """Whether a daemon answers on the socket."""
        try:
            self._connect().close()
        except NoDaemon:
            return False
        return True

    def request(self, request: dict[str, Any], payload: bytes = b"") -> dict[str, Any]:
        """Send one request (and a streamed payload); return the answer."""
        with self._connect() as sock:
            try:
                sock.sendall(json.dumps(request).encode() + b"\n" + payload)
                line = sock.makefile("rb").readline(MAX_REQUEST)
            except TimeoutError:
                raise NoDaemon(f"the daemon on {self.path} took the request but did not answer within "
                                   f"{self.timeout:g} s (is it stuck? `systemctl status notedfu`)",
                                   code="E_SOCKET") from None
            except OSError as exc:
                raise NoDaemon(f"talking to the daemon on {self.path} failed: {exc.strerror or exc}",
                                   code="E_SOCKET") from None
        if not line:
            raise NoDaemon(f"the daemon on {self.path} closed the connection without an answer",
                               code="E_SOCKET")
        try:
            answer = json.loads(line)
        except ValueError:
            raise NoDaemon(f"the daemon answered something that is not JSON: {line[:80]!r}",
                               code="E_BAD_ANSWER") from None
        if not isinstance(answer, dict):
            raise NoDaemon("the daemon's answer is not a JSON object", code="E_BAD_ANSWER")
        return answer

    def events(self) -> Iterator[dict[str, Any]]:
        """Subscribe and yield events until the daemon stops."""
        with self._connect() as sock:
            sock.settimeout(None)
            sock.sendall(b'{"cmd":"subscribe"}\n')
            stream = sock.makefile("rb")
            first = json.loads(stream.readline(MAX_REQUEST) or b"{}")
            if not first.get("ok"):
                raise ControlError(first.get("error", "subscribe refused"), code=first.get("code", "E_BAD_ANSWER"))
            for line in stream:
                yield json.loads(line)
