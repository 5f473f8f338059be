"""Check before touching: everything a command will need, validated before its first byte goes out.

A typo found after a 20-minute download used to cost the update (reported to
Notehub as failed, the card's image deleted). These checks look at specs, line
specs, sequences, patterns, paths and numbers without opening any device;
each problem names the key or option and says what is expected. They raise
:class:`~notedfu.config.ConfigError` (exit 2) listing every problem at once.
``notedfu config check`` runs them on their own.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from notedfu.config import Config, ConfigError
from notedfu.errors import NotedfuError
from notedfu.ports import is_pty
from notedfu.specs import check_option_names, parse_spec

NOTECARD_SERIAL_OPTIONS = {"baud"}
NOTECARD_I2C_OPTIONS = {"address", "pacing"}
TARGET_OPTIONS = {"baud", "parity"}
CONSOLE_OPTIONS = {"baud"}


class Problems:
    """Problems found so far; :meth:`raise_if_any` reports them all (``E_CONFIG``, or ``code``)."""

    def __init__(self, code: str = "E_CONFIG") -> None:
        self.items: list[str] = []
        self.code = code

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def guard(self, where: str, check, *args) -> None:
        """Run ``check(*args)``; a ``ValueError`` or a usage error becomes a problem of ``where``."""
        try:
            check(*args)
        except (ValueError, NotedfuError) as exc:
            self.add(where, exc.message if isinstance(exc, NotedfuError) else str(exc))

    def raise_if_any(self) -> None:
        if self.items:
            head = self.items[0] if len(self.items) == 1 else f"{len(self.items)} problems: " + "; ".join(self.items)
            raise ConfigError(head, code=self.code)


# ------------------------------------------------------------------ single checks
def device_or_url(spec: str, known: set[str], what: str) -> str:
    """The device of ``spec``, its ``?key=`` options checked; a URL's own query is the URL's business."""
    parsed = parse_spec(spec)
    device = parsed.device
    if not parsed.scheme:
        check_option_names(parsed.options, known, what)
    else:
        if parsed.scheme == "sim":
            from notedfu.sim.protocol_sim import check_sim_url

            check_sim_url(device)
        return device
    if not device:
        raise ValueError("no device given")
    if device.startswith("/dev/") and not os.path.exists(device):
        raise ValueError(f"{device} does not exist")
    return device


def notecard_spec(spec: str) -> None:
    """A ``--notecard`` spec: its form and options (``i2c:``, serial, ``sim://``)."""
    from notedfu.notecard.link import parse_spec

    link = parse_spec(spec)
    if link.kind == "i2c":
        if "://" in link.target:
            device_or_url(link.target, NOTECARD_I2C_OPTIONS, "I2C")
        else:
            device_or_url(spec[len("i2c:"):], NOTECARD_I2C_OPTIONS, "I2C")
    else:
        device_or_url(spec, NOTECARD_SERIAL_OPTIONS, "Notecard serial")


def line_spec(spec: str | None, target_device: str) -> None:
    """A BOOT0/NRST line spec: its form, and that the line can exist on this target."""
    if not spec or spec == "none":
        return
    name = spec.lstrip("!")
    if name in ("rts", "dtr"):
        if is_pty(target_device):
            raise ValueError(f"{spec!r}: a pseudo-terminal has no RTS/DTR lines (wire the lines to GPIOs, or "
                             "use the simulator's sim-gpio:SOCKET:N)")
        return
    if name.startswith("sim-gpio:"):
        path, _, offset = name[len("sim-gpio:"):].rpartition(":")
        if not path or not offset.isdigit():
            raise ValueError(f"{spec!r}: use sim-gpio:SOCKET:OFFSET")
        return
    chip, _, offset = name.partition(":")
    if not re.fullmatch(r"(/dev/)?gpiochip\d+", chip) or not offset.isdigit():
        raise ValueError(f"{spec!r}: use rts, dtr, gpiochipN:OFFSET or none (a leading ! inverts)")
    path = chip if chip.startswith("/") else f"/dev/{chip}"
    if not os.path.exists(path):
        raise ValueError(f"{spec!r}: {path} does not exist")


def sequence(text: str | None) -> None:
    """A line sequence (``boot0=1,reset=1,0.05,…``)."""
    if text:
        from notedfu.target.lines import parse_sequence

        parse_sequence(text)


def target_spec(spec: str) -> str:
    """A ``--target`` spec; returns the device (or URL) a ROM target is on, ``""`` for a backend."""
    from notedfu.target.registry import split_target

    backend, rest = split_target(spec)
    if backend not in ("rom", "stm32flash"):
        return ""
    line = rest if backend == "stm32flash" else spec
    device = device_or_url(line, TARGET_OPTIONS, backend if backend != "rom" else "target")
    parsed = parse_spec(line)
    if not parsed.scheme:
        parsed.int_option("baud")
        parsed.choice("parity", ("even", "none"), "even")
    return device if backend == "rom" else ""


def pattern(text: str) -> None:
    """A confirm pattern: a regex once ``{version}`` is filled in."""
    try:
        re.compile(text.replace("{version}", re.escape("1.2.3")))
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None


def console_spec(spec: str) -> None:
    """Where the banner shows: a serial spec or ``qemu:FLASH_FILE``."""
    if spec.startswith("qemu:"):
        if not spec[5:]:
            raise ValueError("qemu: needs the flash file it boots (qemu:FLASH_FILE)")
        if shutil.which("qemu-system-arm") is None:
            raise ValueError("the console is QEMU, but qemu-system-arm is not installed "
                             "(sudo apt-get install qemu-system-arm)")
        return
    device_or_url(spec, CONSOLE_OPTIONS, "console")


def writable_file(path: str | Path) -> None:
    """A file notedfu will create or append to: not a directory, in a directory that exists and is writable."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"{parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{path} is not writable")


def writable_dir(path: str | Path) -> None:
    """A directory notedfu keeps state in: creatable and writable."""
    path = Path(path)
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise ValueError(f"{path} cannot be created or written ({probe} is not a writable directory)")


# ------------------------------------------------------------------ whole commands
def check_agent(config: Config, *, card_required: bool = True) -> None:
    """What ``notedfu update`` and ``notedfu run`` need, before anything is opened."""
    from notedfu.config import validate

    problems = Problems()
    problems.guard("config", validate, config)
    if config.notecard.spec:
        problems.guard("notecard.spec", notecard_spec, config.notecard.spec)
    elif card_required:
        problems.add("notecard.spec", "no Notecard given (--notecard, $NOTEDFU_NOTECARD or [notecard] spec)")
    check_target(problems, config)
    if config.confirm.console:
        problems.guard("confirm.console", console_spec, config.confirm.console)
    problems.guard("confirm.pattern", pattern, config.confirm.pattern)
    if config.agent.events_file:
        problems.guard("agent.events_file", writable_file, config.agent.events_file)
    if config.agent.state_dir:
        problems.guard("agent.state_dir", writable_dir, config.agent.state_dir)
    problems.raise_if_any()


def check_target(problems: Problems, config: Config) -> None:
    """``[target]``: every agent run may flash, so the target must be right before the card is touched."""
    tc = config.target
    if not tc.spec:
        problems.add("target.spec", "no target given (--target or [target] spec): the image would have nowhere "
                                    "to go")
        return
    check_wiring(problems, {"target.spec": tc.spec, "target.boot0": tc.boot0, "target.reset": tc.reset,
                            "target.enter": tc.enter, "target.run": tc.run})
    check_backend_options(problems, tc.spec, {"--preserve": tc.preserve, "--verify": tc.verify},
                          {"--preserve": "target.preserve", "--verify": "target.verify"})


def check_backend_options(problems: Problems, spec: str | None, given: dict[str, object],
                          names: dict[str, str] | None = None) -> None:
    """Options an external tool backend cannot honour are refused, never ignored (``given``: option → value;
    ``names``: how the user spelled each option, when not as on the command line)."""
    from notedfu.target.backends import refusals
    from notedfu.target.registry import split_target

    backend = split_target(spec or "")[0]
    if backend != "rom":
        for option, why in refusals(backend, given):
            problems.add((names or {}).get(option, option), why)


def check_wiring(problems: Problems, named: dict[str, str | None]) -> None:
    """A target spec, its two lines and its two sequences, each under the name the user gave it (in order:
    spec, BOOT0, NRST, entry sequence, run sequence)."""
    (spec_name, spec), (boot0_name, boot0), (reset_name, reset), (enter_name, enter), (run_name, run) = \
        named.items()
    device = ""
    try:
        device = target_spec(spec or "")
    except (ValueError, NotedfuError) as exc:
        problems.add(spec_name, exc.message if isinstance(exc, NotedfuError) else str(exc))
    problems.guard(boot0_name, line_spec, boot0, device)
    problems.guard(reset_name, line_spec, reset, device)
    problems.guard(enter_name, sequence, enter)
    problems.guard(run_name, sequence, run)
    check_backend_options(problems, spec, {"--boot0": boot0, "--reset": reset, "--enter": enter, "--run-seq": run},
                          {"--boot0": boot0_name, "--reset": reset_name, "--enter": enter_name, "--run-seq": run_name})
