"""External flashing tools, for what the ROM bootloader cannot do.

Recovery of a protected or bricked part, SWD, USB DFU: openocd, stm32flash,
dfu-util and st-flash, each behind :class:`ToolDriver` (the same driver
interface as the ROM bootloader's). Each turns a request into an argument list
(never a shell string), runs it with its output captured, and maps a failure
to an error naming the tool, its exit status and the last lines it printed.

Target specs::

    openocd:CONFIG[,CONFIG…]        e.g. openocd:interface/stlink.cfg,target/stm32f1x.cfg
    stm32flash:DEVICE[?baud=N]       e.g. stm32flash:/dev/ttyAMA0?baud=115200
    dfu-util:VID:PID                 e.g. dfu-util:0483:df11
    st-flash:                        first ST-Link found (st-flash:SERIAL for a given one)
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notedfu.errors import TargetError, UsageError
from notedfu.protocol.chips import FLASH_BASE
from notedfu.specs import parse_spec
from notedfu.target.driver import TargetDriver
from notedfu.target.flasher import FlashReport
from notedfu.target.plan import FlashOptions
from notedfu.target.image import Segment

BACKENDS = ("openocd", "stm32flash", "dfu-util", "st-flash")
PACKAGES = {"openocd": "openocd", "stm32flash": "stm32flash", "dfu-util": "dfu-util", "st-flash": "stlink-tools"}
"""The Debian package that provides each tool (st-flash comes with stlink-tools)."""

_NO_VERIFY = ("dfu-util",)  # dfu-util writes and leaves; it has no read-back of its own


def refusals(backend: str, given: dict[str, Any]) -> list[tuple[str, str]]:
    """(option, why) for each option the user gave that ``backend`` cannot honour.

    ``given`` maps option names to what the user asked for (a false value: not asked). A backend never
    ignores an option silently: BOOT0/NRST lines and sequences are the ROM bootloader's (the tools drive
    their own), keeping a region needs the read-back only the ROM path does, and so does unprotecting.
    """
    out = []
    for name in ("--boot0", "--reset", "--enter", "--run-seq"):
        if given.get(name):
            out.append((name, f"the {backend} backend drives the target its own way; lines and sequences are for "
                              "the ROM bootloader (a serial --target)"))
    if given.get("--preserve"):
        out.append(("--preserve", f"the {backend} backend cannot keep a region inside the pages it rewrites; flash "
                                  "through the ROM bootloader (a serial --target) to preserve it"))
    for name in ("--readout-unprotect", "--write-unprotect"):
        if given.get(name):
            out.append((name, f"not through the {backend} backend: unprotect with the tool itself first"))
    if given.get("--verify") in ("crc", "read") and backend in _NO_VERIFY:
        out.append(("--verify", f"{backend} cannot read the chip back; use --verify none, or another backend"))
    return out


class ToolDriver(TargetDriver):
    """A target an external tool flashes; it cannot read the chip for us, so nothing is compared."""

    reads_chip = False

    def __init__(self, backend: str, where: str) -> None:
        self.name = backend
        self.where = where
        self.started_by_flash = False

    def open(self) -> None:
        """The tool must be installed (checked here, before any image is written anywhere)."""
        if shutil.which(self.name) is None:
            raise TargetError(f"{self.name} is not installed (Debian: apt-get install {PACKAGES[self.name]})",
                              code="E_TOOL_MISSING")

    def close(self) -> None:
        """Nothing is held between the tool's runs."""

    def flash(self, segments: list[Segment], options: FlashOptions) -> FlashReport:
        """One contiguous, checked image through the tool, which verifies it (unless told not to)."""
        self.check(segments, options)
        if len(segments) != 1:
            raise UsageError(f"{self.name} needs one contiguous image; this one has {len(segments)} parts",
                             code="E_USAGE")
        verify = options.verify != "none"
        with tempfile.NamedTemporaryFile(suffix=".bin") as raw:
            raw.write(segments[0].data)
            raw.flush()
            output = run_tool(flash_command(self.name, self.where, Path(raw.name), segments[0].address, verify,
                                            options.run))
        size = len(segments[0].data)
        return FlashReport(bytes_written=size, verify_method=f"{self.name}" if verify else "none",
                           started=options.run, tool_output=output[-2000:])

    def start(self) -> None:
        """The tool's own way of starting the application (a reset, or stm32flash's Go)."""
        run_tool(start_command(self.name, self.where))

    def describe(self) -> dict[str, Any]:
        """The tool and where it reaches the target (it learns the chip itself)."""
        return {"backend": self.name, "where": self.where}


@dataclass(frozen=True)
class ToolRun:
    """A command to run."""

    argv: list[str]
    timeout: float = 600.0


def flash_command(backend: str, where: str, image: Path, address: int = FLASH_BASE, verify: bool = True,
                  run: bool = True) -> ToolRun:
    """The argument list that flashes a raw binary ``image`` at ``address`` (and starts it, if ``run``)."""
    if backend == "openocd":
        configs = [c for c in where.split(",") if c]
        if not configs:
            raise UsageError("openocd: needs config files, e.g. openocd:interface/stlink.cfg,target/stm32f1x.cfg",
                             code="E_BAD_SPEC")
        argv = ["openocd"]
        for config in configs:
            argv += ["-f", config]
        program = f"program {{{image}}} 0x{address:08x}" + (" verify" if verify else "") + (" reset" if run else "") \
            + " exit"
        return ToolRun(argv + ["-c", program])
    if backend == "stm32flash":
        device, line = _stm32flash_line(where)
        if not device:
            raise UsageError("stm32flash: needs a device, e.g. stm32flash:/dev/ttyAMA0", code="E_BAD_SPEC")
        argv = ["stm32flash", *line, "-w", str(image), "-S", f"0x{address:08x}"]
        argv += ["-g", f"0x{address:08x}"] if run else []
        return ToolRun(argv + (["-v"] if verify else []) + [device])
    if backend == "dfu-util":
        if not where or where.count(":") != 1:
            raise UsageError("dfu-util: needs VID:PID, e.g. dfu-util:0483:df11", code="E_BAD_SPEC")
        return ToolRun(["dfu-util", "-d", where, "-a", "0", "-s", f"0x{address:08x}" + (":leave" if run else ""),
                        "-D", str(image)])
    if backend == "st-flash":
        argv = ["st-flash"] + (["--serial", where] if where else []) + (["--reset"] if run else [])
        return ToolRun(argv + ["write", str(image), f"0x{address:08x}"])
    raise UsageError(f"unknown backend {backend!r}", code="E_BAD_SPEC")


def start_command(backend: str, where: str, address: int = FLASH_BASE) -> ToolRun:
    """The argument list that starts the application without writing anything.

    stm32flash's ``-g`` alone (its manual: "Start execution at specified address"), openocd's ``reset run``,
    ``st-flash reset``, and for dfu-util a DfuSe leave request with no file ("DfuSe command mode" in its
    dfuse.c: ``-s ADDRESS:leave`` without ``-D`` sends only the zero-length download that leaves)."""
    if backend == "openocd":
        argv = ["openocd"]
        for config in (c for c in where.split(",") if c):
            argv += ["-f", config]
        return ToolRun(argv + ["-c", "init", "-c", "reset run", "-c", "shutdown"])
    if backend == "stm32flash":
        device, line = _stm32flash_line(where)
        return ToolRun(["stm32flash", *line, "-g", f"0x{address:08x}", device])
    if backend == "dfu-util":
        return ToolRun(["dfu-util", "-d", where, "-a", "0", "-s", f"0x{address:08x}:leave"])
    if backend == "st-flash":
        return ToolRun(["st-flash"] + (["--serial", where] if where else []) + ["reset"])
    raise UsageError(f"unknown backend {backend!r}", code="E_BAD_SPEC")


def _stm32flash_line(where: str) -> tuple[str, list[str]]:
    """(device, line options): ``-b BAUD``, and ``-m 8n1`` for ``?parity=none`` (stm32flash's default: 8e1)."""
    line = parse_spec(where)
    parity = line.choice("parity", ("even", "none"), "even")
    return line.device, ["-b", str(line.int_option("baud", 115200))] + (["-m", "8n1"] if parity == "none" else [])


def run_tool(run: ToolRun) -> str:
    """Run a tool; return its output; raise ``TargetError`` with its last words on failure."""
    tool = run.argv[0]
    if shutil.which(tool) is None:
        raise TargetError(f"{tool} is not installed (Debian: apt-get install {PACKAGES.get(tool, tool)})",
                          code="E_TOOL_MISSING")
    try:
        done = subprocess.run(run.argv, capture_output=True, text=True, timeout=run.timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TargetError(f"{tool} did not finish within {run.timeout:g} s", code="E_TOOL_TIMEOUT") from None
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        last = " | ".join(line.strip() for line in output.splitlines()[-3:])
        raise TargetError(f"{tool} failed (exit {done.returncode}): {last}", code="E_TOOL_FAILED")
    return output
