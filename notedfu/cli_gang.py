"""``notedfu flash IMAGE --target A --target B … [--jobs N]``: gang flashing from the command line.

One progress line per board on a terminal, one JSON event stream (every event
naming its ``board``) otherwise, then a table: board, chip, result, seconds.
The exit code is 0 only if every board was flashed; otherwise the failing
boards are named (``E_GANG``, exit 8).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from notedfu.errors import ExitCode, Interrupted, TargetError, UsageError
from notedfu.events import Events, json_lines_sink
from notedfu.gang import Board, BoardResult, Gang, make_boards, pair_lines
from notedfu.target.driver import TargetOptions
from notedfu.target.image import Segment
from notedfu.target.lines import ENTER_BOOTLOADER, RUN_APPLICATION
from notedfu.target.plan import FlashOptions


def boards_from_args(args: argparse.Namespace) -> list[Board]:
    """The row of boards ``--target``/``--boot0``/``--reset`` describe, each checked before any is touched."""
    from notedfu.preflight import Problems, check_wiring

    boot0 = pair_lines(args.target, args.boot0, "--boot0")
    reset = pair_lines(args.target, args.reset, "--reset")
    problems = Problems("E_BAD_SPEC")
    for i, target in enumerate(args.target):
        check_wiring(problems, {f"--target #{i + 1}": target, f"--boot0 #{i + 1}": boot0[i],
                                f"--reset #{i + 1}": reset[i], "--enter": args.enter, "--run-seq": args.run_seq})
    problems.raise_if_any()
    return make_boards(args.target, lambda i: TargetOptions(args.baud, boot0[i], reset[i],
                                                            args.enter or ENTER_BOOTLOADER,
                                                            args.run_seq or RUN_APPLICATION))


def gang_flash(args: argparse.Namespace, segments: list[Segment], options: FlashOptions) -> int:
    """Flash every board; print the table (or the JSON result); raise naming the boards that failed."""
    boards = boards_from_args(args)
    sink, close = _sink(args, [b.name for b in boards])
    gang = Gang(boards, sink, jobs=args.jobs)
    try:
        results = gang.flash(segments, options)
    finally:
        close()
    failed = [r for r in results if not r.ok]
    if args.json:
        gang.events().emit("boards", boards=[vars(r) for r in results])  # then SUCCESS, or main()'s FAILURE
        if not failed:
            gang.events().status("SUCCESS")
    else:
        print(format_table(results))
    if any(r.error.get("code") == Interrupted.code for r in failed):  # Ctrl-C: exit 130, as one board's flash does
        raise Interrupted(f"stopped in the middle of flashing {len(failed)} of {len(results)} boards; run the same "
                          "`notedfu flash` again (their bootloaders still answer)")
    if failed:
        raise TargetError(f"{len(failed)} of {len(results)} boards failed: " + "; ".join(
            f"{r.board} ({r.error.get('code', '?')}" + (f", vector table {r.vector_table}" if r.vector_table else "")
            + ")" for r in failed), code="E_GANG")
    return ExitCode.OK


def _sink(args: argparse.Namespace, boards: list[str]) -> tuple[Callable[[dict[str, Any]], None], Callable[[], None]]:
    if args.json or not sys.stdout.isatty():
        args.json = True
        args.events = Events(json_lines_sink(sys.stdout), source="LOCAL")  # main() ends a failure with FAILURE
        return json_lines_sink(sys.stdout), lambda: None
    from notedfu.cli_render import GangProgress

    progress = GangProgress(boards, sys.stderr)
    return progress, progress.close


def format_table(results: list[BoardResult]) -> str:
    """The result of every board, one row each."""
    width = max(len("board"), *(len(r.board) for r in results))
    lines = [f"{'board':<{width}}  {'chip':<12} {'result':<8} {'seconds':>8} {'pages':>5}  detail"]
    for r in results:
        detail = "" if r.ok else f"{r.error.get('code', '')}: {r.error.get('message', '')}" + (
            f" (vector table {r.vector_table})" if r.vector_table else "")
        pages = "" if r.pages_written is None else str(r.pages_written)
        lines.append(f"{r.board:<{width}}  {r.chip or '?':<12} {'ok' if r.ok else 'FAILED':<8} {r.seconds:>8.2f} "
                     f"{pages:>5}  {detail}".rstrip())
    return "\n".join(lines)


def single_target(args: argparse.Namespace) -> None:
    """``--target`` given once: the lists argparse made become the single values the rest expects."""
    for option, name in (("boot0", "--boot0"), ("reset", "--reset")):
        values = getattr(args, option)
        if values and len(values) > 1:
            raise UsageError(f"{name} was given {len(values)} times for one --target", code="E_BAD_SPEC")
        setattr(args, option, values[0] if values else None)
    args.target = args.target[0]
