"""External flashing tools, for what the ROM bootloader cannot do.

Recovery of a protected or bricked part, SWD, USB DFU: openocd, stm32flash,
dfu-util and st-flash. Each backend turns a request into an argument list
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
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notedfu.errors import UsageError
from notedfu.errors import TargetError
from notedfu.protocol.chips import FLASH_BASE
from notedfu.target.image import Segment

BACKENDS = ("openocd", "stm32flash", "dfu-util", "st-flash")
PACKAGES = {"openocd": "openocd", "stm32flash": "stm32flash", "dfu-util": "dfu-util", "st-flash": "stlink-tools"}
"""The Debian package that provides each tool (st-flash comes with stlink-tools)."""

LARGEST_FLASH = 2 * 1024 * 1024
"""No STM32 has more flash than this: the bound for an image whose chip only the tool will learn."""

_NO_VERIFY = ("dfu-util",)  # dfu-util writes and leaves; it has no read-back of its own


def split_target(spec: str) -> tuple[str, str]:
    """(backend or "rom", rest): ``stm32flash:/dev/ttyUSB0`` → ("stm32flash", "/dev/ttyUSB0")."""
    for name in BACKENDS:
        if spec.startswith(name + ":"):
            return name, spec[len(name) + 1:]
    return "rom", spec


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


def flash_with_tool(backend: str, where: str, segments: list[Segment], *, verify: bool = True,
                    run: bool = True) -> dict[str, Any]:
    """Flash one contiguous, already checked image with an external tool; what it said, for the record."""
    if len(segments) != 1:
        raise UsageError(f"{backend} needs one contiguous image; this one has {len(segments)} parts", code="E_USAGE")
    with tempfile.NamedTemporaryFile(suffix=".bin") as raw:
        raw.write(segments[0].data)
        raw.flush()
        output = run_tool(flash_command(backend, where, Path(raw.name), segments[0].address, verify, run))
    return {"backend": backend, "tool_output": output[-2000:]}


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
        device, _, query = where.partition("?")
        baud = urllib.parse.parse_qs(query).get("baud", ["115200"])[-1]
        if not device:
            raise UsageError("stm32flash: needs a device, e.g. stm32flash:/dev/ttyAMA0", code="E_BAD_SPEC")
        argv = ["stm32flash", "-b", baud, "-w", str(image), "-S", f"0x{address:08x}"]
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
