"""The Notecard's commands: ``status``, ``fetch``, ``sideload``, ``dfu``, ``sim notecard``."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from notedfu import cli_update
from notedfu.cli_common import check_notecard, events_for, open_card, staging_for
from notedfu.files import write_atomic
from notedfu.errors import Busy, ExitCode, NotedfuError, UsageError


def cmd_status(args: argparse.Namespace) -> int:
    """``notedfu status``: the daemon's view when one runs (and no --notecard is given), else the card's."""
    from notedfu.update.control import ControlClient

    if args.notecard is None and (answer := cli_update.daemon_status(args)) is not None:
        return answer
    socket_path = ControlClient(args.socket).path
    if args.notecard is None and not os.environ.get("NOTEDFU_NOTECARD"):
        raise UsageError(f"no daemon answers on {socket_path} (--socket), and no Notecard is "
                         "given to ask instead (--notecard or $NOTEDFU_NOTECARD)", code="E_NO_NOTECARD")
    # The same fields as the daemon's answer, saying why the card was asked instead.
    daemon = {"state": "not asked" if args.notecard else "none", "detail": None, "policy": None, "queued": None,
              "socket": str(socket_path)}

    from notedfu.notecard.dfu import Downloader, ImageInfo

    staging = staging_for(args)
    downloader = Downloader(open_card(args), staging)
    repaired = None
    try:
        with staging.claimed():  # no agent at work: a leftover DFU mode is ours to fix
            repaired = downloader.mode.repair()
            busy = False
    except Busy:
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
    report = cli_update.status_document(
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
        cli_update.print_retry(report["job"])
    if busy:
        print("agent         busy (another notedfu holds the state directory)")
    return ExitCode.OK


def cmd_fetch(args: argparse.Namespace) -> int:
    """``notedfu fetch``."""
    from notedfu.notecard.dfu import Downloader, FetchOptions

    if args.output:  # found now, not after the whole download
        from notedfu.preflight import Problems, writable_file

        problems = Problems("E_USAGE")
        problems.guard("-o", writable_file, args.output)
        problems.raise_if_any()
    check_notecard(args)
    events, close = events_for(args)
    staging = staging_for(args)
    options = FetchOptions(chunk=args.chunk, ready_timeout=args.ready_timeout, renew_seconds=args.renew,
                           binary=False if args.base64 else None)
    try:
        with staging.claimed():
            events.status("START")
            downloader = Downloader(open_card(args), staging, events, options)
            result = downloader.fetch()
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
    from notedfu.notecard.sideload import SideloadOptions, Sideloader

    from notedfu.notecard.dfu import MAX_IMAGE_BYTES
    from notedfu.target.image import read_limited

    image = read_limited(args.image, MAX_IMAGE_BYTES)  # stat first: a huge file is refused unread
    check_notecard(args)
    events, close = events_for(args, source="LOCAL")
    staging = staging_for(args)
    options = SideloadOptions(binary=False if args.base64 else None, chunk=args.chunk,
                              set_time=not args.no_set_time, ready_timeout=args.ready_timeout)
    try:
        with staging.claimed():  # the card's saved mode lives in the state directory
            events.status("START")
            result = Sideloader(open_card(args), staging, events, options).sideload(image, args.image.name)
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
    rsp = open_card(args).request(req)
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
