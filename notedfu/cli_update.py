"""Command-line parts for the agent: ``update``, ``run``, ``approve``, ``cancel``, ``events``,
``install``, ``keygen``, ``sign``, and the daemon half of ``status``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from notedfu.errors import Busy, ExitCode, UsageError
from notedfu.cli_render import LogSink
from notedfu.events import Events, file_sink, json_lines_sink
from notedfu.cli_target import seconds

def add_socket_option(parser: argparse.ArgumentParser) -> None:
    """``--socket``: where the daemon listens."""
    parser.add_argument("--socket", metavar="PATH",
                        help="the daemon's control socket (default $NOTEDFU_SOCKET or /run/notedfu/notedfu.sock)")


def _add_agent_options(parser: argparse.ArgumentParser, add_notecard_options: Callable) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML config (default /etc/notedfu/notedfu.toml)")
    add_notecard_options(parser)
    parser.add_argument("--target", metavar="SPEC", help="the target (overrides [target] spec)")
    parser.add_argument("--boot0", metavar="LINE", help="where BOOT0 is wired (overrides [target] boot0)")
    parser.add_argument("--reset", metavar="LINE", help="where NRST is wired (overrides [target] reset)")
    parser.add_argument("--console", metavar="SPEC", help="console to confirm the boot on: a serial spec or "
                                                           "qemu:FLASH_FILE (overrides [confirm] console)")
    parser.add_argument("--pattern", help="what the new firmware prints; {version} is filled in")
    parser.add_argument("--confirm-timeout", type=seconds, metavar="S", help="seconds to wait for the pattern")
    parser.add_argument("--policy", choices=("auto", "manual"), help="overrides [policy] mode")
    parser.add_argument("--events-file", metavar="FILE", help="also append events here as JSON lines")
    parser.add_argument("--json", action="store_true", help="JSON-lines events on stdout")


def add_parsers(sub: Any, add_notecard_options: Callable) -> None:
    """Register the agent's subcommands."""
    update = sub.add_parser("update", help="one full update cycle in the foreground: fetch, flash, boot, confirm, "
                                           "report")
    _add_agent_options(update, add_notecard_options)
    update.add_argument("--image", type=Path, metavar="FILE",
                        help="install this local image instead of the one the Notecard offers")
    update.add_argument("--force", action="store_true", help="install even if that version is already installed")
    update.set_defaults(run=cmd_update)

    run = sub.add_parser("run", help="the agent as a service: poll the Notecard, run jobs by policy, serve the "
                                     "control socket")
    _add_agent_options(run, add_notecard_options)
    add_socket_option(run)
    run.add_argument("--poll", type=seconds, metavar="S", help="seconds between dfu.status polls "
                                                             "(overrides [agent] poll_interval)")
    run.set_defaults(run=cmd_run)

    approve = sub.add_parser("approve", help="let one image (named by its MD5) be installed under the manual policy")
    approve.add_argument("md5", help="the image's MD5, as `notedfu status` shows it")
    add_socket_option(approve)
    approve.add_argument("--state-dir", type=Path, metavar="DIR", help="with no daemon: the agent's state directory")
    approve.set_defaults(run=cmd_approve)

    cancel = sub.add_parser("cancel", help="stop the daemon's job before it touches the target")
    add_socket_option(cancel)
    cancel.set_defaults(run=cmd_cancel)

    events = sub.add_parser("events", help="print the daemon's events as JSON lines as they happen")
    add_socket_option(events)
    events.add_argument("--until", metavar="STATUS", action="append",
                        help="exit after a status event with this status (SUCCESS, FAILURE, …; repeatable)")
    events.set_defaults(run=cmd_events)

    install = sub.add_parser("install", help="hand a local image to the daemon")
    install.add_argument("image", type=Path)
    install.add_argument("--stream", action="store_true",
                         help="send the bytes over the socket (the daemon cannot read the file itself)")
    add_socket_option(install)
    install.set_defaults(run=cmd_install)

    config = sub.add_parser("config", help="check a configuration: every spec, line, pattern, path and number "
                                           "the agent would use, without opening anything")
    config_sub = config.add_subparsers(dest="what", metavar="WHAT")
    config_sub.required = True
    check = config_sub.add_parser("check", help="validate the config and these overrides; exit 2 naming each "
                                                "problem")
    _add_agent_options(check, add_notecard_options)
    check.set_defaults(run=cmd_config_check, json=False)

    keygen = sub.add_parser("keygen", help="make an Ed25519 signing key; prints the public key for [policy]")
    keygen.add_argument("key", type=Path, help="where to write the private key (never overwritten)")
    keygen.set_defaults(run=cmd_keygen)

    sign = sub.add_parser("sign", help="append a signature trailer to an image (the trailer is never flashed)")
    sign.add_argument("image", type=Path)
    sign.add_argument("--key", type=Path, required=True, help="the private key from `notedfu keygen`")
    sign.add_argument("-o", "--output", type=Path, help="write here (default: replace IMAGE)")
    sign.set_defaults(run=cmd_sign)

    pack = sub.add_parser("pack", help="make an update file (.ndfu) to upload to Notehub instead of the .bin: "
                                       "the image compressed, or a delta against the image the devices run")
    pack.add_argument("image", type=Path, help="the new firmware (raw .bin, as flashed at the flash base)")
    pack.add_argument("--from", dest="base", type=Path, metavar="OLD",
                      help="make a delta against OLD (the .bin the devices run now)")
    pack.add_argument("--no-compress", action="store_true", help="store the whole image uncompressed")
    pack.add_argument("--key", type=Path, help="sign the update file with this private key (`notedfu keygen`)")
    pack.add_argument("-o", "--output", type=Path, required=True, help="the update file to write")
    pack.set_defaults(run=cmd_pack)


# ------------------------------------------------------------------ helpers
def _config(args: argparse.Namespace):
    from notedfu.config import load_config

    config = load_config(args.config)
    for section, key, value in (("notecard", "spec", args.notecard), ("notecard", "baud", args.baud),
                                ("agent", "state_dir", str(args.state_dir) if args.state_dir else None),
                                ("target", "spec", args.target), ("target", "boot0", args.boot0),
                                ("target", "reset", args.reset), ("confirm", "console", args.console),
                                ("confirm", "pattern", args.pattern), ("confirm", "timeout", args.confirm_timeout),
                                ("policy", "mode", args.policy), ("agent", "events_file", args.events_file),
                                ("agent", "socket", getattr(args, "socket", None)),
                                ("agent", "poll_interval", getattr(args, "poll", None))):
        if value is not None:
            setattr(getattr(config, section), key, value)
    if args.timeout != 30.0:
        config.notecard.timeout = args.timeout
    if not config.notecard.spec:
        from notedfu.notecard.link import ENV_SPEC

        config.notecard.spec = os.environ.get(ENV_SPEC) or None
    return config


def _checked_config(args: argparse.Namespace, *, card_required: bool = True):
    """The configuration with the command line's overrides, checked whole before anything is opened."""
    from notedfu.preflight import check_agent

    config = _config(args)
    check_agent(config, card_required=card_required)
    return config


def _events(args: argparse.Namespace, config: Any, *, log: bool) -> tuple[Events, Callable[[], None]]:
    """Events to stdout (--json), the events file, and a log or progress display on stderr."""
    from notedfu.cli_common import events_for

    if log:
        events, close = Events(*([json_lines_sink(sys.stdout)] if args.json else []), LogSink()), lambda: None
    else:
        events, close = events_for(args)
    if config.agent.events_file:
        try:
            events.sinks.append(file_sink(config.agent.events_file))
        except OSError as exc:
            raise UsageError(f"cannot open events file {config.agent.events_file}: {exc.strerror}",
                             code="E_CONFIG") from exc
    return events, close


def _client(args: argparse.Namespace):
    from notedfu.update.control import ControlClient

    return ControlClient(args.socket)


def _answer(answer: dict[str, Any]) -> dict[str, Any]:
    """The daemon's answer, or its refusal raised with the daemon's code."""
    from notedfu.update.control import ControlError

    if not answer.get("ok"):
        text, code = str(answer.get("error", "refused")), str(answer.get("code", "E_REFUSED"))
        raise Busy(text) if code == "E_BUSY" else ControlError(text, code=code)
    return answer


# ------------------------------------------------------------------ commands
def cmd_update(args: argparse.Namespace) -> int:
    """``notedfu update``: the exit code says how it ended (README, "Exit codes")."""
    from notedfu.update.agent import LocalImage, Updater

    config = _checked_config(args, card_required=args.image is None)
    local = None
    if args.image is not None:
        try:
            local = LocalImage(args.image.read_bytes(), source="LOCAL")
        except OSError as exc:
            raise UsageError(f"cannot read {args.image}: {exc.strerror}", code="E_IMAGE_FILE") from exc
    events, close = _events(args, config, log=False)
    updater = Updater(config, events, force=args.force, retry_now=True)
    try:
        outcome = updater.run(local)
    finally:
        close()
    if not args.json:
        job = outcome.job
        print(f"{outcome.state}" + (f": job {job.id}, image {job.md5}" + (f" version {job.version}" if job.version
                                    else "") if job else "") + (f" — {outcome.detail}" if outcome.detail else ""))
    error = (outcome.job.error if outcome.job else {}) or {}
    if outcome.state in ("retry", "superseded"):
        print(f"notedfu: {error.get('code', 'E_UPDATE')}: {outcome.detail}", file=sys.stderr)
    if outcome.failed:
        print(f"notedfu: {error.get('code', 'E_UPDATE')}: {error.get('message', outcome.detail)}", file=sys.stderr)
    return outcome.exit()


def cmd_run(args: argparse.Namespace) -> int:
    """``notedfu run``: until SIGTERM."""
    from notedfu.update.daemon import Daemon

    config = _checked_config(args)
    events, _ = _events(args, config, log=True)
    return Daemon(config, events).serve()


def cmd_config_check(args: argparse.Namespace) -> int:
    """``notedfu config check``: exit 0 and say what would be used, or exit 2 naming every problem."""
    config = _checked_config(args)
    where = args.config or "/etc/notedfu/notedfu.toml (defaults if absent)"
    print(f"config {where}: OK")
    print(f"  notecard  {config.notecard.spec}")
    print(f"  target    {config.target.spec}  boot0 {config.target.boot0 or 'none'}  reset "
          f"{config.target.reset or 'none'}")
    print(f"  confirm   {config.confirm.console or 'none (confirmation skipped)'}  /{config.confirm.pattern}/")
    return ExitCode.OK


def cmd_approve(args: argparse.Namespace) -> int:
    """``notedfu approve MD5``: through the daemon, or straight into the state directory."""
    from notedfu.update.control import NoDaemon

    client = _client(args)
    try:
        note = _answer(client.request({"cmd": "approve", "md5": args.md5}))["note"]
    except NoDaemon as exc:
        explicit = args.socket or os.environ.get("NOTEDFU_SOCKET")
        if not args.state_dir and (explicit or Path(client.path).exists()):  # a typo, or a daemon we may not reach
            raise NoDaemon(f"{exc.message}: the approval was not given (check --socket)") from None
        from notedfu.notecard.staging import default_state_dir
        from notedfu.update.job import JobStore

        state = args.state_dir or default_state_dir()
        note = JobStore(state).approve(args.md5)
        note = (note + "; " if note else "") + f"no daemon on {client.path}: written into {state} for the next " \
                                                 "`notedfu update` or `notedfu run`"
    print(f"approved {args.md5.lower()}" + (f" ({note})" if note else ""))
    return ExitCode.OK


def cmd_cancel(args: argparse.Namespace) -> int:
    """``notedfu cancel``."""
    answer = _answer(_client(args).request({"cmd": "cancel"}))
    print(f"cancelled {answer['cancelled']}")
    return ExitCode.OK


def cmd_events(args: argparse.Namespace) -> int:
    """``notedfu events``: JSON lines until the daemon stops (or ``--until``)."""
    until = {s.upper() for s in args.until or ()}
    for event in _client(args).events():
        print(json.dumps(event, separators=(",", ":")), flush=True)
        if event.get("type") == "status" and event.get("status") in until:
            break
    return ExitCode.OK


def cmd_install(args: argparse.Namespace) -> int:
    """``notedfu install IMAGE``."""
    client = _client(args)
    if args.stream:
        try:
            data = args.image.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {args.image}: {exc.strerror}", code="E_IMAGE_FILE") from exc
        answer = client.request({"cmd": "install", "stream": True, "length": len(data)}, data)
    else:
        answer = client.request({"cmd": "install", "path": str(args.image.resolve())})
    answer = _answer(answer)
    print(f"queued {answer['md5']} ({answer['length']} bytes)")
    return ExitCode.OK


def cmd_keygen(args: argparse.Namespace) -> int:
    """``notedfu keygen KEY``."""
    from notedfu.update.signature import generate_key

    public = generate_key(args.key)
    print(f"private key: {args.key} (keep it off the devices)")
    print(f'[policy]\npublic_key = "{public}"')
    return ExitCode.OK


def cmd_sign(args: argparse.Namespace) -> int:
    """``notedfu sign IMAGE --key KEY``."""
    from notedfu.files import write_atomic
    from notedfu.update.signature import TRAILER_SIZE, load_private_key, sign

    key = load_private_key(args.key)
    try:
        data = args.image.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.image}: {exc.strerror}", code="E_IMAGE_FILE") from exc
    signed = sign(data, key)
    output = args.output or args.image
    write_atomic(output, signed)
    print(f"signed {output}: {len(signed) - TRAILER_SIZE} bytes + {TRAILER_SIZE}-byte trailer")
    return ExitCode.OK


def cmd_pack(args: argparse.Namespace) -> int:
    """``notedfu pack NEW [--from OLD] -o UPDATE.ndfu``."""
    from notedfu.files import write_atomic
    from notedfu.protocol.ndfu import pack, read_header
    from notedfu.target.image import MAX_BINARY, read_limited
    from notedfu.update.signature import load_private_key, sign

    key = load_private_key(args.key) if args.key else None  # a bad key fails before any work
    image = read_limited(args.image, MAX_BINARY)
    base = read_limited(args.base, MAX_BINARY) if args.base else None
    for path, data in ((args.image, image), (args.base, base)):
        if data is not None and not data:
            raise UsageError(f"image {path} is empty", code="E_IMAGE_FILE")
    packed = pack(image, base, compress=not args.no_compress)
    header = read_header(packed)
    write_atomic(args.output, sign(packed, key) if key else packed)
    what = f"delta against {args.base} (MD5 {header.base_md5})" if base is not None else header.encoding.name.lower()
    print(f"{args.output}: {len(packed)} bytes ({len(packed) / len(image):.3f} of the image), {what}"
          + (", signed" if key else ""))
    print(f"image: {header.length} bytes, MD5 {header.md5}, CRC-32 {header.crc32:08x}, "
          f"{header.info.decode(errors='replace') or 'no firmware::info'}")
    return ExitCode.OK


def print_retry(job: dict[str, Any]) -> None:
    """The line `notedfu status` shows for a job waiting to try again after a transient failure."""
    import time

    error = job.get("error") or {}
    if job.get("retry_at") and error.get("kind") == "transient":
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["retry_at"]))
        print(f"retry         transient {error.get('code')} at {error.get('stage')}: {error.get('message')}; "
              f"next attempt {when} (attempts so far {job.get('attempts')})")


STATUS_KEYS = ("source", "daemon", "card", "job", "last_job", "installed", "pending", "staged", "agent_busy")


def status_document(source: str, **parts: Any) -> dict[str, Any]:
    """``notedfu status --json``: one schema whether the daemon or the card answered (absent parts are null)."""
    unknown = set(parts) - set(STATUS_KEYS)
    assert not unknown, unknown
    return {key: parts.get(key) for key in STATUS_KEYS} | {"source": source}


def daemon_status(args: argparse.Namespace) -> int | None:
    """``notedfu status`` when a daemon answers; ``None`` when none does."""
    client = _client(args)
    if not client.available():
        return None
    answer = _answer(client.request({"cmd": "status"}))
    if args.json:
        daemon = {key: answer.get(key) for key in ("state", "detail", "policy", "queued")} | {"socket": str(client.path)}
        print(json.dumps(status_document("daemon", daemon=daemon, job=answer.get("job"),
                                         last_job=answer.get("last_job"), installed=answer.get("installed"),
                                         pending=answer.get("pending")), indent=1))
        return ExitCode.OK
    job, last, pending = answer.get("job"), answer.get("last_job"), answer.get("pending") or {}
    print(f"daemon        {answer['state']}" + (f" — {answer['detail']}" if answer.get("detail") else "")
          + f" (policy {answer['policy']})")
    if job:
        stage = next((n for n, s in job["stages"].items() if s["state"] not in ("done", "skipped")), "-")
        print(f"job           {job['id']}  image {job['md5']}  version {job['version'] or '-'}  stage {stage}")
        print_retry(job)
    if pending:
        print(f"awaiting      {pending['md5']}  version {pending.get('version') or '-'}  "
              f"(`notedfu approve {pending['md5']}`)")
    if last and not job:
        print(f"last job      {last['id']}  {last['state']}  version {last['version'] or '-'}"
              + (f"  {last['error'].get('code')}: {last['error'].get('message')}" if last.get("error") else ""))
    installed = answer.get("installed") or {}
    print(f"installed     {installed.get('version') or '-'}" + (f"  md5 {installed['md5']}" if installed.get("md5")
                                                                 else ""))
    return ExitCode.OK
