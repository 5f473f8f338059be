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
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from notedfu.errors import UsageError
from notedfu.target.an3155 import TargetError
from notedfu.target.chips import FLASH_BASE


@dataclass(frozen=True)
class ToolRun:
    """A command to run."""

    argv: list[str]
    timeout: float = 600.0


def flash_command(backend: str, where: str, image: Path, address: int = FLASH_BASE, verify: bool = True) -> ToolRun:
    """The argument list that flashes a raw binary ``image`` at ``address``."""
    if backend == "openocd":
        configs = [c for c in where.split(",") if c]
        if not configs:
            raise UsageError("openocd: needs config files, e.g. openocd:interface/stlink.cfg,target/stm32f1x.cfg",
                             code="E_BAD_SPEC")
        argv = ["openocd"]
        for config in configs:
            argv += ["-f", config]
        program = f"program {{{image}}} 0x{address:08x}" + (" verify" if verify else "") + " reset exit"
        return ToolRun(argv + ["-c", program])
    if backend == "stm32flash":
        device, _, query = where.partition("?")
        baud = urllib.parse.parse_qs(query).get("baud", ["115200"])[-1]
        if not device:
            raise UsageError("stm32flash: needs a device, e.g. stm32flash:/dev/ttyAMA0", code="E_BAD_SPEC")
        argv = ["stm32flash", "-b", baud, "-w", str(image), "-S", f"0x{address:08x}", "-g", f"0x{address:08x}"]
        return ToolRun(argv + (["-v"] if verify else []) + [device])
    if backend == "dfu-util":
        if not where or where.count(":") != 1:
            raise UsageError("dfu-util: needs VID:PID, e.g. dfu-util:0483:df11", code="E_BAD_SPEC")
        return ToolRun(["dfu-util", "-d", where, "-a", "0", "-s", f"0x{address:08x}:leave", "-D", str(image)])
    if backend == "st-flash":
        argv = ["st-flash"] + (["--serial", where] if where else []) + ["--reset", "write", str(image),
                                                                         f"0x{address:08x}"]
        return ToolRun(argv)
    raise UsageError(f"unknown backend {backend!r}", code="E_BAD_SPEC")


def run_tool(run: ToolRun) -> str:
    """Run a tool; return its output; raise ``TargetError`` with its last words on failure."""
    tool = run.argv[0]
    if shutil.which(tool) is None:
        raise TargetError(f"{tool} is not installed (Debian: apt-get install {tool})", code="E_TOOL_MISSING")
    try:
        done = subprocess.run(run.argv, capture_output=True, text=True, timeout=run.timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TargetError(f"{tool} did not finish within {run.timeout:g} s", code="E_TOOL_TIMEOUT") from None
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        last = " | ".join(line.strip() for line in output.splitlines()[-3:])
        raise TargetError(f"{tool} failed (exit {done.returncode}): {last}", code="E_TOOL_FAILED")
    return output
