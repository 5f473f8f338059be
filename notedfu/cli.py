"""The ``notedfu`` command line.

Every subcommand ends in one of the exit codes of :class:`notedfu.errors.ExitCode`;
a failure prints one line, ``notedfu: E_CODE: message``, on stderr (and a
``FAILURE`` status event on stdout with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from notedfu import __version__, demo, stopping
from notedfu.errors import Busy, ExitCode, Interrupted, NotedfuError, UsageError
from notedfu.events import Events, RichProgress, json_lines_sink
from notedfu.target import cli as target_cli
from notedfu.target.cli import positive, seconds
from notedfu.update import cli as update_cli


def _add_notecard_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Notecard link")
    group.add_argument("--notecard", metavar="SPEC",
                       help="serial device (/dev/ttyACM0, /dev/serial0?baud=9600), i2c:/dev/i2c-1, "
                            "or sim://notecard?… (default: $NOTEDFU_NOTECARD)")
    group.add_argument("--baud", type=positive, help="serial baud rate (default 9600; ignored by USB)")
    group.add_argument("--timeout", type=seconds, default=30.0, metavar="S",
                       help="seconds to wait for each Notecard answer (default 30)")
    group.add_argument("--state-dir", type=Path, metavar="DIR",
                       help="where images are staged (default $NOTEDFU_STATE_DIR, /var/lib/notedfu "
                            "or ~/.local/state/notedfu)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="notedfu", description="Host firmware updates from a Blues Notecard.")
    parser.add_argument("--version", action="version", version=f"notedfu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    status = sub.add_parser("status", help="the daemon's job and state if one runs; else the Notecard's DFU state, "
                                           "the image it holds, what is staged")
    _add_notecard_options(status)
    update_cli.add_socket_option(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(run=cmd_status)

    fetch = sub.add_parser("fetch", help="download the image from the Notecard, verified and resumable")
    _add_notecard_options(fetch)
    fetch.add_argument("-o", "--output", type=Path, metavar="FILE", help="also copy the verified image here")
    fetch.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    fetch.add_argument("--chunk", type=positive, metavar="N",
                       help="ask for at most N bytes per dfu.get (default: what this card is known to take, "
                            "4096 at first; larger sizes are tried once in binary mode)")
    fetch.add_argument("--ready-timeout", type=seconds, default=120.0, metavar="S",
                       help="how long DFU mode may take to become active (default 120)")
    fetch.add_argument("--renew", type=seconds, default=600.0, metavar="S",
                       help="re-send hub.set dfu this often during long transfers (default 600)")
    fetch.add_argument("--base64", action="store_true", help="do not use the binary mode even if offered")
    fetch.set_defaults(run=cmd_fetch)

    sideload = sub.add_parser("sideload", help="put an image onto the Notecard (dfu.put), as if Notehub had "
                                               "delivered it: for rigs and benches without Notehub")
    sideload.add_argument("image", type=Path, help="the host firmware image (.bin)")
    _add_notecard_options(sideload)
    sideload.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    sideload.add_argument("--base64", action="store_true", help="do not use the binary mode even if offered")
    sideload.add_argument("--chunk", type=positive, metavar="N", help="at most N bytes per dfu.put "
                                                                "(default: what the card asks for)")
    sideload.add_argument("--no-set-time", action="store_true",
                          help="fail instead of giving a card that has no time the host's clock")
    sideload.add_argument("--ready-timeout", type=seconds, default=120.0, metavar="S",
                          help="how long DFU mode may take to become active (default 120)")
    sideload.set_defaults(run=cmd_sideload)

    dfu = sub.add_parser("dfu", help="the Notecard's download policy: on, off, or a battery rule (vvalue)")
    dfu.add_argument("action", choices=("on", "off", "vvalue"))
    dfu.add_argument("rule", nargs="?", help="for vvalue: e.g. 'usb:1;high:1;normal:0;low:0;dead:0'")
    _add_notecard_options(dfu)
    dfu.add_argument("--json", action="store_true", help="print the resulting dfu.status as JSON")
    dfu.set_defaults(run=cmd_dfu)

    sim = sub.add_parser("sim", help="run a simulated device on a pseudo-terminal")
    sim_sub = sim.add_subparsers(dest="device", metavar="DEVICE")
    sim_sub.required = True
    card = sim_sub.add_parser("notecard", help="a simulated Notecard")
    card.add_argument("--pty", action="store_true", required=True,
                      help="serve on a pseudo-terminal; its path is the first line printed")
    card.add_argument("--image", type=Path, help="host firmware the card holds (ready, hub mode periodic)")
    card.add_argument("--profile", default="usb",
                      help="link profile: uart9600, aux115200, usb, i2c100k, i2c400k, slowcard")
    card.add_argument("--fault", action="append", default=[], metavar="KIND[:REQUEST][@N][+]",
                      help="inject a fault (repeatable): drop, corrupt, io, restart, md5, truncate, garbage, "
                           "trace, halfline, badb64, nonewline, nohandback; :REQUEST aims it at a request by name")
    card.add_argument("--download", type=float, metavar="S", help="seconds the card spends downloading first")
    card.add_argument("--ready-delay", type=float, metavar="S", help="DFU mode becomes active after this long")
    card.add_argument("--dfu-timeout", type=float, metavar="S", help="DFU mode ends after this long (default 900)")
    card.add_argument("--max-chunk", type=positive, metavar="N", help="largest dfu.get length served (default 8192)")
    card.add_argument("--refusal", choices=("tagged", "untagged", "incomplete", "io", "cutoff"),
                      help="how a longer dfu.get is refused (default tagged: {dfu-dl-chunk-length})")
    card.add_argument("--firmware", choices=("base64", "binary-store", "current"),
                      help="card firmware generation: no card.binary; card.binary but no dfu.get binary; both "
                           "(default current)")
    card.add_argument("--no-binary", action="store_true", help="firmware without card.binary (base64 only)")
    card.add_argument("--mode", help="initial hub mode (default periodic)")
    card.add_argument("--latency", type=float, metavar="S", help="card seconds per request (default 0.05)")
    card.add_argument("--per-kib", type=float, metavar="S", help="card seconds per KiB read (default 0.01)")
    card.set_defaults(run=cmd_sim_notecard)
    target_cli.add_sim_parser(sim_sub)
    target_cli.add_parsers(sub)

    update_cli.add_parsers(sub, _add_notecard_options)
    demo.add_parser(sub)

    bench = sub.add_parser("bench", help="benchmarks on the simulators")
    bench_sub = bench.add_subparsers(dest="what", metavar="WHAT")
    bench_sub.required = True
    download = bench_sub.add_parser("download", help="download speed: ours vs the lower bound vs note-python")
    download.add_argument("--profile", action="append", metavar="NAME",
                          help="profile(s) to run (default uart9600, aux115200, usb, i2c100k, i2c400k; "
                               "also slowcard)")
    download.add_argument("--size", type=positive, metavar="BYTES", help="image size for every profile")
    download.add_argument("--no-peer", action="store_true", help="skip the stock note-python run")
    download.add_argument("--pacing", choices=("blues", "docs"), default="blues",
                          help="our I2C pacing: note-c's (default) or the documented minimum")
    download.add_argument("--json", action="store_true", help="print the results as JSON")
    download.set_defaults(run=cmd_bench_download)
    flash = bench_sub.add_parser("flash", help="flash + verify speed: ours vs the lower bound vs stm32flash, "
                                               "stm32loader")
    flash.add_argument("--size", type=positive, default=128 * 1024, metavar="BYTES", help="image size (default 128 KiB)")
    flash.add_argument("--no-peer", action="store_true", help="skip stm32flash and stm32loader")
    flash.add_argument("--json", action="store_true", help="print the results as JSON")
    flash.set_defaults(run=cmd_bench_flash)
    return parser


# ------------------------------------------------------------------ helpers
def events_for(args: argparse.Namespace, source: str = "NOTECARD") -> tuple[Events, Callable[[], None]]:
    """JSON lines with --json or when stdout is not a terminal; a progress bar otherwise."""
    if getattr(args, "json", False) or not sys.stdout.isatty():
        args.json = True
        args.events = Events(json_lines_sink(sys.stdout), source=source)  # main() ends it with FAILURE
        return args.events, lambda: None
    progress = RichProgress(sys.stderr)
    return Events(progress, source=source), progress.close


def _check_notecard(args: argparse.Namespace) -> None:
    """Check before touching: the Notecard spec's form and options."""
    from notedfu.notecard.link import ENV_SPEC
    from notedfu.preflight import Problems, notecard_spec

    spec = args.notecard or os.environ.get(ENV_SPEC)
    if spec:
        problems = Problems("E_BAD_SPEC")
        problems.guard("--notecard", notecard_spec, spec)
        problems.raise_if_any()


def _open(args: argparse.Namespace):
    from notedfu.notecard.link import open_notecard

    _check_notecard(args)
    return open_notecard(args.notecard, baud=args.baud, timeout=args.timeout)


def _staging(args: argparse.Namespace):
    from notedfu.notecard.staging import Staging, default_state_dir

    return Staging(args.state_dir or default_state_dir())


def write_atomic(dest: Path, content: Path | bytes) -> None:
    """Replace ``dest`` with a file's copy or with bytes, so that readers see the old or the new file.

    The file gets the mode a plain ``open()`` would give it (the umask's), or keeps the mode of the file
    it replaces; it is fsynced before the rename and the directory after it.
    """
    from notedfu.notecard.staging import fsync_dir

    dest = dest.resolve()
    try:
        mode = dest.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            if isinstance(content, bytes):
                stream.write(content)
            else:
                with open(content, "rb") as source:
                    shutil.copyfileobj(source, stream)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


# ------------------------------------------------------------------ commands
def cmd_status(args: argparse.Namespace) -> int:
    """``notedfu status``: the daemon's view when one runs (and no --notecard is given), else the card's."""
    from filelock import Timeout

    from notedfu.update.control import ControlClient

    if args.notecard is None and (answer := update_cli.daemon_status(args)) is not None:
        return answer
    socket_path = ControlClient(args.socket).path
    if args.notecard is None and not os.environ.get("NOTEDFU_NOTECARD"):
        raise UsageError(f"no daemon answers on {socket_path} (--socket), and no Notecard is "
                         "given to ask instead (--notecard or $NOTEDFU_NOTECARD)", code="E_NO_NOTECARD")
    # The same fields as the daemon's answer, saying why the card was asked instead.
    daemon = {"state": "not asked" if args.notecard else "none", "detail": None, "policy": None, "queued": None,
              "socket": str(socket_path)}

    from notedfu.notecard.dfu import Downloader, ImageInfo

    staging = _staging(args)
    downloader = Downloader(_open(args), staging)
    repaired = None
    try:
        with staging.lock.acquire(timeout=0):  # no agent at work: a leftover DFU mode is ours to fix
            repaired = downloader.mode.repair()
            busy = False
    except Timeout:
        busy = True
    dfu = downloader.dfu_status()
    card: dict[str, Any] = {"hub_mode": downloader.mode.current(), "dfu": dfu, "repaired_mode": repaired,
                            "image": None, "image_error": None}
    if dfu.get("mode") == "ready":
        try:
            card["image"] = vars(ImageInfo.from_body(dfu.get("body")))
        except NotedfuError as exc:
            card["image_error"] = exc.as_dict()
    staged = [{"md5": j.md5, "length": j.length, "verified": j.verified, "complete": j.complete,
               "version": j.version, "source": j.source} for j in staging.journals()]
    from dataclasses import asdict

    from notedfu.update.job import JobStore, job_summary

    store = JobStore(staging.root)
    job = store.current()
    latest = store.latest()
    report = update_cli.status_document(
        "card", daemon=daemon, card=card, job=asdict(job) if job else None, staged=staged, agent_busy=busy,
        last_job=job_summary(latest), installed=store.installed(), pending=store.pending())
    if args.json:
        print(json.dumps(report, indent=1))
        return ExitCode.OK
    print("daemon        " + (f"not asked (--notecard given; its socket is {socket_path})" if args.notecard
                               else f"none answers on {socket_path}: this is the card's own view"))
    print(f"hub mode      {card['hub_mode']}" + (f" (restored from DFU mode: {repaired})" if repaired else ""))
    print(f"host DFU      {dfu.get('mode')}" + (f" — {dfu['status']}" if dfu.get("status") else "")
          + ("" if dfu.get("on", True) else " (downloads off)"))
    if image := card.get("image"):
        print(f"image         {image['source'] or image['name']}  {image['length']} bytes  md5 {image['md5']}"
              + (f"  version {image['version']}" if image["version"] else ""))
    for item in report["staged"]:
        state = "complete" if item["complete"] else f"{100 * item['verified'] // item['length']}% (resumable)"
        print(f"staged        {item['md5']}  {item['length']} bytes  {state}")
    if job:
        print(f"job           {job.id}  image {job.md5}  stage {job.next_stage() or '-'}")
        update_cli.print_retry(report["job"])
    if busy:
        print("agent         busy (another notedfu holds the state directory)")
    return ExitCode.OK


def cmd_fetch(args: argparse.Namespace) -> int:
    """``notedfu fetch``."""
    from filelock import Timeout

    from notedfu.notecard.dfu import Downloader, FetchOptions

    if args.output:  # found now, not after the whole download
        from notedfu.preflight import Problems, writable_file

        problems = Problems("E_USAGE")
        problems.guard("-o", writable_file, args.output)
        problems.raise_if_any()
    _check_notecard(args)
    events, close = events_for(args)
    staging = _staging(args)
    options = FetchOptions(chunk=args.chunk, ready_timeout=args.ready_timeout, renew_seconds=args.renew,
                           binary=False if args.base64 else None)
    try:
        with staging.lock.acquire(timeout=0):
            events.status("START")
            downloader = Downloader(_open(args), staging, events, options)
            result = downloader.fetch()
    except Timeout:
        raise Busy(f"another notedfu is using {staging.root}") from None
    except NotedfuError as exc:
        kept = [j for j in staging.journals() if not j.complete and j.verified]
        if kept and not exc.permanent:
            exc.message += (f" — the {kept[0].verified} verified bytes are kept: `notedfu fetch` again continues "
                            "from there")
        raise
    finally:
        close()
    if args.output:
        write_atomic(args.output, result.path)
    summary = {"path": str(result.path), "output": str(args.output) if args.output else None,
               "length": result.image.length, "md5": result.image.md5, "crc32": result.image.crc32,
               "version": result.image.version, "resumed_from": result.resumed_from, "chunks": result.chunks,
               "chunk_size": result.chunk_size, "binary": result.binary, "seconds": round(result.seconds, 3),
               "card_mode": result.card_mode, "already_staged": result.already_staged}
    if args.json:
        events.status("SUCCESS", result=summary)
    else:
        how = "already staged" if result.already_staged else (
            f"{result.chunks} chunks of {result.chunk_size} ({'binary' if result.binary else 'base64'})"
            f" in {result.seconds:.1f} s" + (f", resumed at {result.resumed_from}" if result.resumed_from else ""))
        print(f"fetched {result.image.source or result.image.md5}: {result.image.length} bytes, md5 "
              f"{result.image.md5}, {how}; Notecard back in '{result.card_mode}'")
        print(f"staged at {result.path}" + (f", copied to {args.output}" if args.output else ""))
    return ExitCode.OK


def cmd_sideload(args: argparse.Namespace) -> int:
    """``notedfu sideload IMAGE``."""
    from filelock import Timeout

    from notedfu.notecard.sideload import SideloadOptions, Sideloader

    from notedfu.notecard.dfu import MAX_IMAGE_BYTES
    from notedfu.target.image import read_limited

    image = read_limited(args.image, MAX_IMAGE_BYTES)  # stat first: a huge file is refused unread
    _check_notecard(args)
    events, close = events_for(args, source="LOCAL")
    staging = _staging(args)
    options = SideloadOptions(binary=False if args.base64 else None, chunk=args.chunk,
                              set_time=not args.no_set_time, ready_timeout=args.ready_timeout)
    try:
        with staging.lock.acquire(timeout=0):  # the card's saved mode lives in the state directory
            events.status("START")
            result = Sideloader(_open(args), staging, events, options).sideload(image, args.image.name)
    except Timeout:
        raise Busy(f"another notedfu is using {staging.root}") from None
    finally:
        close()
    summary = {"image": str(args.image), "length": result.length, "md5": result.md5, "crc32": result.crc32,
               "version": result.version, "chunks": result.chunks, "chunk_size": result.chunk_size,
               "binary": result.binary, "seconds": round(result.seconds, 3), "card_mode": result.card_mode,
               "clock_set": result.clock_set}
    if args.json:
        events.status("SUCCESS", result=summary)
    else:
        print(f"side-loaded {args.image.name}: {result.length} bytes, md5 {result.md5}"
              + (f", version {result.version}" if result.version else "")
              + f", {result.chunks} chunk(s) of {result.chunk_size} ({'binary' if result.binary else 'base64'})"
              + f" in {result.seconds:.1f} s; the Notecard offers it, back in '{result.card_mode}'")
    return ExitCode.OK


def cmd_dfu(args: argparse.Namespace) -> int:
    """``notedfu dfu on|off|vvalue RULE``."""
    req: dict[str, Any] = {"req": "dfu.status", "name": "user"}
    if args.action == "vvalue":
        if not args.rule:
            raise UsageError("dfu vvalue needs a rule, e.g. 'usb:1;high:1;normal:0;low:0;dead:0'")
        req["vvalue"] = args.rule
    else:
        req[args.action] = True
    rsp = _open(args).request(req)
    if args.json:
        print(json.dumps(rsp))
    else:
        rule = f", rule {rsp['vvalue']}" if rsp.get("vvalue") else ""
        print(f"host firmware downloads {'on' if rsp.get('on', True) else 'off'}{rule} (mode {rsp.get('mode')})")
    return ExitCode.OK


def cmd_sim_notecard(args: argparse.Namespace) -> int:
    """``notedfu sim notecard --pty``: serve until killed."""
    from notedfu.sim.notecard import card_from_options
    from notedfu.sim.pty import card_server

    opts: dict[str, Any] = {"profile": args.profile, "fault": args.fault}
    for key in ("image", "download", "ready_delay", "dfu_timeout", "max_chunk", "mode", "latency", "per_kib",
                "refusal", "firmware"):
        if (value := getattr(args, key)) is not None:
            opts[key] = str(value)
    if args.no_binary:
        opts["binary"] = "0"
    try:
        card = card_from_options(opts)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot start the simulated Notecard: {exc}", code="E_SIM_CONFIG") from exc
    server = card_server(card)
    print(server.path, flush=True)
    try:
        server.serve_forever(until_signal=True)  # SIGINT/SIGTERM: the normal way to stop a simulator
    finally:
        server.stop()
        # what the host told the card, for rigs and demos to check after the fact
        print(json.dumps({"hub_mode": card.hub_mode, "dfu": card.dfu_state, "reports": card.reports,
                          "host_version": card.host_version, "warnings": card.warnings}), flush=True)
    return ExitCode.OK


def cmd_bench_download(args: argparse.Namespace) -> int:
    """``notedfu bench download``."""
    from notedfu.bench import run_download_bench

    return run_download_bench(args.profile, size=args.size, peer=not args.no_peer, as_json=args.json,
                              pacing=args.pacing)


def cmd_bench_flash(args: argparse.Namespace) -> int:
    """``notedfu bench flash``."""
    from notedfu.bench_flash import run_flash_bench

    return run_flash_bench(args.size, peers=not args.no_peer, as_json=args.json)


# ------------------------------------------------------------------ entry point
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


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not isinstance(sys.stdout, ReaderGoneSafe):
        sys.stdout = ReaderGoneSafe(sys.stdout)
    stopping.install()  # SIGINT/SIGTERM only set a flag: the work stops where it is safe (notedfu.stopping)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        error: NotedfuError = Interrupted("interrupted")
    except NotedfuError as exc:
        error = exc
    except Exception as exc:  # a bug or an unforeseen failure: still one line, still a code
        if os.environ.get("NOTEDFU_DEBUG"):
            raise
        error = NotedfuError(f"{type(exc).__name__}: {exc} (NOTEDFU_DEBUG=1 shows the traceback)",
                             code="E_INTERNAL")
    if getattr(args, "json", False):
        # The command's own event stream (its source, its event file) when it got that far.
        events = getattr(args, "events", None) or Events(json_lines_sink(sys.stdout), source="LOCAL")
        events.status("FAILURE", error=error.as_dict())
    print(f"notedfu: {error}", file=sys.stderr)
    return int(error.exit_code)
