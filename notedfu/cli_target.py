"""Command-line parts for the target: ``notedfu flash``, ``notedfu target info``, ``notedfu sim stm32``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from notedfu.errors import ExitCode, Interrupted, UsageError
from notedfu.specs import parse_region


def _number(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def count(text: str) -> int:
    """An argparse type: an integer ≥ 0."""
    return _number(text)


def positive(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    value = _number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _region(text: str) -> tuple[int, int]:
    try:
        return parse_region(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_target_options(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """``--target`` and the wiring options; with ``many``, ``--target``, ``--boot0`` and ``--reset`` repeat
    (one board each, in order)."""
    group = parser.add_argument_group("target")
    repeat = {"action": "append"} if many else {}
    group.add_argument("--target", required=True, metavar="SPEC", **repeat,
                       help="serial device (/dev/ttyAMA0[?baud=N]), sim://stm32?…, or a backend: openocd:CFG,…, "
                            "stm32flash:DEV, dfu-util:VID:PID, st-flash:[SERIAL]"
                            + ("; repeat it to flash several boards at once" if many else ""))
    group.add_argument("--baud", type=positive, help="bootloader baud rate (default 115200)")
    group.add_argument("--boot0", metavar="LINE", **repeat,
                       help="where BOOT0 is wired: rts, dtr, gpiochip0:17, none (! inverts)"
                            + ("; once per --target, in order (once for all: rts, dtr, none)" if many else ""))
    group.add_argument("--reset", metavar="LINE", **repeat,
                       help="where NRST is wired (same forms; active = held in reset)")
    group.add_argument("--enter", metavar="SEQ", help="sequence entering the bootloader "
                                                      "(default boot0=1,reset=1,0.05,reset=0,0.1)")
    group.add_argument("--run-seq", metavar="SEQ", help="sequence starting the application "
                                                        "(default boot0=0,reset=1,0.05,reset=0)")


def add_parsers(sub: Any) -> None:
    """Register the target subcommands."""
    flash = sub.add_parser("flash", help="flash an STM32 through its ROM bootloader (or an external tool)")
    flash.add_argument("image", type=Path, metavar="FILE", help=".bin, .hex or .elf")
    add_target_options(flash, many=True)
    flash.add_argument("--jobs", type=positive, default=0, metavar="N",
                       help="with several --target: boards flashed at once (default: all)")
    flash.add_argument("--address", type=_number, help="load address of a .bin (default: the flash base)")
    flash.add_argument("--verify", choices=("auto", "crc", "read", "none"), default="auto",
                       help="CRC command when offered, else read-back (default auto)")
    flash.add_argument("--preserve", type=_region, action="append", default=[], metavar="START:END",
                       help="a flash region never erased (settings, EEPROM emulation); repeatable")
    flash.add_argument("--retries", type=count, default=2, help="erase+rewrite attempts per failing page (default 2)")
    flash.add_argument("--public-key", metavar="B64", help="refuse an image not signed by this key "
                                                         "(notedfu keygen prints it); a signature trailer is never "
                                                         "flashed, checked or not")
    flash.add_argument("--no-run", action="store_true", help="leave the chip in the bootloader")
    flash.add_argument("--allow-offset", action="store_true", help="allow an image that starts above the flash base")
    flash.add_argument("--no-vector-check", action="store_true", help="flash even if the vector table looks wrong")
    flash.add_argument("--readout-unprotect", action="store_true",
                       help="lift readout protection first: THIS MASS-ERASES THE CHIP")
    flash.add_argument("--write-unprotect", action="store_true", help="lift write protection first (chip resets)")
    flash.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    flash.set_defaults(run=cmd_flash)

    target = sub.add_parser("target", help="the target chip")
    target_sub = target.add_subparsers(dest="what", metavar="WHAT")
    target_sub.required = True
    info = target_sub.add_parser("info", help="chip, bootloader version, command set, flash size, protection")
    add_target_options(info)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=cmd_target_info)


def add_sim_parser(sim_sub: Any) -> None:
    """``notedfu sim stm32``."""
    stm32 = sim_sub.add_parser("stm32", help="an emulated STM32 ROM bootloader")
    stm32.add_argument("--pty", action="store_true", required=True,
                       help="serve on a pseudo-terminal; the first line printed is the --target spec for it (its path, ?parity=none: a pty carries no parity bit)")
    stm32.add_argument("--chip", default="420", help="product ID in hex (default 420: STM32F100, as in QEMU's "
                                                     "stm32vldiscovery)")
    stm32.add_argument("--bootloader", choices=("v2", "v3", "v3crc"),
                       help="v2 (0x22, legacy erase), v3 (0x31, extended erase), v3crc (+ Get Checksum 0xA1); "
                            "default: the family's")
    stm32.add_argument("--flash-file", type=Path, help="keep the flash contents in this file")
    stm32.add_argument("--baud", type=int, default=115200, help="modeled line rate (default 115200, 8E1)")
    stm32.add_argument("--fault", action="append", default=[], metavar="KIND[@N][+]",
                       help="nack, drop, reset, power (N-th write), wprot (page N); repeatable")
    stm32.add_argument("--rdp", action="store_true", help="start readout-protected")
    stm32.add_argument("--time-scale", type=float, default=1.0, help="scale erase/program times (tests)")
    stm32.add_argument("--gpio", type=Path, metavar="SOCKET",
                       help="wire BOOT0 and NRST to a simulated GPIO chip on this Unix socket (lines "
                            "sim-gpio:SOCKET:0 and :1); the chip then starts in its application, BOOT0 low")
    stm32.set_defaults(run=cmd_sim_stm32)


def _driver(args: argparse.Namespace, events: Any = None):
    """The target's driver, from the one spec registry the agent uses too (not yet opened)."""
    from notedfu.target.driver import TargetOptions
    from notedfu.target.lines import ENTER_BOOTLOADER, RUN_APPLICATION
    from notedfu.target.registry import target_driver

    options = TargetOptions(args.baud, args.boot0, args.reset, args.enter or ENTER_BOOTLOADER,
                            args.run_seq or RUN_APPLICATION)
    return target_driver(args.target, options, events)


def cmd_target_info(args: argparse.Namespace) -> int:
    """``notedfu target info``."""
    driver = _driver(args)
    if not driver.reads_chip:
        raise UsageError("target info needs the ROM bootloader (a serial port or sim://stm32)", code="E_USAGE")
    with driver:
        driver.connect()
        facts = driver.describe()
    if args.json:
        print(json.dumps(facts, indent=1))
    else:
        print(f"chip          {facts['chip']} (id {facts['pid']}, family {facts['family']})")
        print(f"bootloader    {facts['bootloader']}  commands {' '.join(facts['commands'])}")
        print(f"CRC command   {'yes' if facts['crc_command'] else 'no (verification reads back)'}")
        print(f"flash         {facts['flash_size'] // 1024} KiB at {facts['flash_base']}, {facts['pages']} pages")
        print(f"protection    {'READOUT PROTECTED' if facts['readout_protected'] else 'none'}")
        for quirk in facts["quirks"]:
            print(f"note          {quirk}")
    return ExitCode.OK


def cmd_flash(args: argparse.Namespace) -> int:
    """``notedfu flash``."""
    from notedfu.cli_common import events_for
    from notedfu.protocol.chips import FLASH_BASE
    from notedfu.target.plan import FlashOptions
    from notedfu.target.image import load_image

    from notedfu.cli_gang import gang_flash, single_target

    gang = len(args.target) > 1
    if not gang:
        single_target(args)
    _check_target_args(args)
    segments = load_image(args.image, args.address if args.address is not None else FLASH_BASE,
                          address_given=args.address is not None)
    segments = _without_signature(segments, args)
    options = FlashOptions(verify=args.verify, retries=args.retries, preserve=args.preserve,
                           allow_offset=args.allow_offset, check_vectors=not args.no_vector_check,
                           run=not args.no_run, interruptible=True)
    if gang:
        return gang_flash(args, segments, options)
    events, close = events_for(args, source="LOCAL")
    driver = _driver(args, events)
    driver.check(segments, options)  # before anything is opened: the checks every driver shares
    started = time.monotonic()
    try:
        events.status("START")
        with driver:
            driver.connect()
            if args.readout_unprotect or args.write_unprotect:
                driver.unprotect(args.readout_unprotect, args.write_unprotect)
            try:
                report = driver.flash(segments, options)
            except Interrupted as exc:
                raise Interrupted(f"{exc.message} in the middle of the flash: the chip's vector table is "
                                  "erased, so it will not boot until it is flashed again — run the same "
                                  "`notedfu flash` again (the bootloader still answers)") from exc
            summary = {**driver.describe(), **vars(report)}
    finally:
        close()
    summary["seconds"] = round(time.monotonic() - started, 3)
    summary["image_bytes"] = sum(len(s.data) for s in segments)
    if args.json:
        events.status("SUCCESS", result=summary)
    elif not driver.reads_chip:
        print(f"flashed {args.image} with {driver.name} in {summary['seconds']:.1f} s")
    else:
        print(f"flashed {summary['image_bytes']} bytes to {summary['chip']}: {summary['pages_written']} pages written, "
              f"{summary['pages_unchanged']} unchanged and skipped, {summary['pages_verified']} verified by "
              f"{summary['verify_method']} ({summary['blocks_written']} blocks, {summary['blocks_skipped']} empty "
              f"skipped)" + (f", {summary['repaired_pages']} pages repaired"
                                                 if summary["repaired_pages"] else "")
              + (", application started" if summary["started"] else "") + f" in {summary['seconds']:.1f} s")
    return ExitCode.OK


def _check_target_args(args: argparse.Namespace) -> None:
    """Check before touching: the target spec, its lines and sequences, and the preserved regions' form."""
    from notedfu.preflight import Problems, check_backend_options, check_wiring

    problems = Problems("E_BAD_SPEC")
    targets = args.target if isinstance(args.target, list) else [args.target]
    if len(targets) == 1:  # several boards: their wiring is checked board by board (notedfu.cli_gang)
        check_wiring(problems, {"--target": args.target, "--boot0": args.boot0, "--reset": args.reset,
                                "--enter": args.enter, "--run-seq": args.run_seq})
    for target in targets:
        check_backend_options(problems, target, {
            "--preserve": getattr(args, "preserve", None), "--verify": getattr(args, "verify", None),
            "--readout-unprotect": getattr(args, "readout_unprotect", False),
            "--write-unprotect": getattr(args, "write_unprotect", False)})
    problems.raise_if_any()


def _without_signature(segments: list, args: argparse.Namespace) -> list:
    """A signed image's trailer is not firmware: strip it, and check it when a key is given."""
    from notedfu.target.image import Segment
    from notedfu.update.signature import public_key_from_text, verified_payload

    if len(segments) != 1:
        if getattr(args, "public_key", None):
            raise UsageError("--public-key: only a raw .bin image carries a signature trailer", code="E_USAGE")
        return segments
    data = segments[0].data
    key = public_key_from_text(args.public_key) if getattr(args, "public_key", None) else None
    payload = verified_payload(data, key)
    if len(payload) != len(data) and key is None:
        print(f"notedfu: {args.image}: signature trailer removed, not checked (no --public-key)", file=sys.stderr)
    return [Segment(segments[0].address, payload)] if len(payload) != len(data) else segments


def cmd_sim_stm32(args: argparse.Namespace) -> int:
    """``notedfu sim stm32 --pty``: serve until killed."""
    from notedfu.sim.pty import stm32_server
    from notedfu.sim.stm32 import stm32_from_options

    opts: dict[str, Any] = {"chip": args.chip, "baud": str(args.baud), "fault": args.fault,
                            "rdp": "1" if args.rdp else "0", "time_scale": str(args.time_scale)}
    if args.bootloader:
        opts["bootloader"] = args.bootloader
    if args.flash_file:
        opts["flash_file"] = str(args.flash_file)
    try:
        chip = stm32_from_options(opts)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot start the emulated STM32: {exc}", code="E_SIM_CONFIG") from exc
    server = stm32_server(chip)
    gpio = None
    if args.gpio:
        from notedfu.sim.gpio import SimGpioChip

        gpio = SimGpioChip(chip, args.gpio)
    print(server.spec, flush=True)
    try:
        server.serve_forever(until_signal=True)
    finally:
        server.stop()
        if gpio is not None:
            gpio.close()
        chip.close()
    sys.stdout.flush()
    return ExitCode.OK
