"""The ``notedfu`` command line.

Every subcommand ends in one of the exit codes of :class:`notedfu.errors.ExitCode`;
a failure prints one line, ``notedfu: E_CODE: message``, on stderr (and a
``FAILURE`` status event on stdout with ``--json``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from notedfu import __version__, cli_target, cli_update, demo, stopping
from notedfu.cli_card import cmd_dfu, cmd_fetch, cmd_sideload, cmd_sim_notecard, cmd_status
from notedfu.cli_common import ReaderGoneSafe
from notedfu.cli_target import positive, seconds
from notedfu.errors import Interrupted, NotedfuError
from notedfu.events import Events, json_lines_sink


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
    cli_update.add_socket_option(status)
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
    cli_target.add_sim_parser(sim_sub)
    cli_target.add_parsers(sub)

    cli_update.add_parsers(sub, _add_notecard_options)
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
    flash.add_argument("--size", type=positive, metavar="BYTES", help="image size (default 128 KiB)")
    flash.add_argument("--no-peer", action="store_true", help="skip stm32flash and stm32loader")
    flash.add_argument("--boards", type=positive, metavar="N",
                       help="gang flashing instead: N emulated boards at once ÷ one board (64 KiB unless --size)")
    flash.add_argument("--json", action="store_true", help="print the results as JSON")
    flash.set_defaults(run=cmd_bench_flash)
    update = bench_sub.add_parser("update", help="the whole update of the sensor pair (card → host → chip → boot): "
                                                 "plain .bin, compressed, delta, and Blues' approach")
    update.add_argument("--profile", action="append", metavar="NAME",
                        help="profile(s) to run (default uart9600, aux115200, i2c100k)")
    update.add_argument("--variant", action="append", choices=("bin", "xz", "delta", "blues"),
                        help="variant(s) to run (default all; blues needs stm32flash)")
    update.add_argument("--bootloader", choices=("v2", "v3crc"), default="v2",
                        help="the emulated F100's bootloader: v2 (its real one, default) or v3crc (what-if: CRC)")
    update.add_argument("--json", action="store_true", help="print the results as JSON")
    update.set_defaults(run=cmd_bench_update)
    return parser


# ------------------------------------------------------------------ helpers
def cmd_bench_download(args: argparse.Namespace) -> int:
    """``notedfu bench download``."""
    from notedfu.bench import run_download_bench

    return run_download_bench(args.profile, size=args.size, peer=not args.no_peer, as_json=args.json,
                              pacing=args.pacing)


def cmd_bench_flash(args: argparse.Namespace) -> int:
    """``notedfu bench flash``."""
    from notedfu.bench_flash import run_flash_bench

    if args.boards:
        from notedfu.bench_flash import run_gang_bench

        return run_gang_bench(args.boards, args.size or 64 * 1024, as_json=args.json)
    return run_flash_bench(args.size or 128 * 1024, peers=not args.no_peer, as_json=args.json)


def cmd_bench_update(args: argparse.Namespace) -> int:
    """``notedfu bench update``."""
    from notedfu.bench_update import run_update_bench

    return run_update_bench(args.profile, args.variant, as_json=args.json, bootloader=args.bootloader)


# ------------------------------------------------------------------ entry point
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
