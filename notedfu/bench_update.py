"""``notedfu bench update``: the whole update — Notecard → host → chip → boot — for the sensor pair.

The chip holds ``sensor-2.0.0``; the simulated Notecard offers 2.0.1 as Notehub
would deliver what the user uploaded:

* **bin** — the plain ``.bin`` (what every peer ships today);
* **xz** — ``notedfu pack NEW``: the whole image, compressed;
* **delta** — ``notedfu pack NEW --from OLD``: a bsdiff4 delta against 2.0.0;

each installed by the agent (``Updater``, the code ``notedfu update`` runs) on a
fresh simulated rig, its state directory as the agent leaves it after installing
2.0.0 (the installed record, and 2.0.0 kept staged: the last-known-good and the
delta's base): the link profile's card, the emulated STM32F100 with its
real ROM bootloader (v2.2: no CRC command, so pages are compared by reading
them back) at 115200 baud with the datasheet's erase and programming times,
BOOT0/NRST on a simulated GPIO chip, and QEMU booting the chip's flash until
the new banner shows. And the anchor, **blues**: Blues' approach with other
people's code — the python-dfu sequence on stock note-python (4 KiB base64
``dfu.get`` chunks), then ``stm32flash -w -v -g`` writing every page, then
QEMU booting it.

Each row gives the bytes that crossed the Notecard link (both ways, counted
by the simulated card), the pages written, the seconds of each part (card:
check … exit_dfu, including the card's wait for DFU mode; flash; boot:
start + banner; report) and end to end, and the ratio to the plain ``.bin``
on the same profile and run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from notedfu.checksums import md5_hex
from notedfu.config import Config
from notedfu.notecard.staging import Staging
from notedfu.events import Events
from notedfu.protocol.ndfu import pack
from notedfu.sim import registry
from notedfu.sim.qemu import boot, qemu_available
from notedfu.sim.rig import FIRMWARE_DIR, RigSetup, SimulatedRig
from notedfu.sim.timing import profile
from notedfu.update.job import JobStore

PROFILES = ("uart9600", "aux115200", "i2c100k")
VARIANTS = ("bin", "xz", "delta", "blues")
OLD, NEW = "2.0.0", "2.0.1"
BANNER = "notedfu-sensor {version} booted"
BOOTLOADER = "v2"  # the STM32F100's real ROM bootloader (AN2606: v2.2, no Get Checksum)
BOOTLOADERS = {"v2": "v2.2, its real one: no CRC command, pages compared by reading them back",
               "v3crc": "v3.1 + Get Checksum, a what-if: pages compared by CRC"}
PARTS = {"card": ("check", "enter_dfu", "transfer", "verify", "exit_dfu"), "flash": ("flash",),
         "boot": ("boot", "confirm"), "report": ("report",)}
TARGETS = {  # on uart9600: (what, at most)
    "delta_seconds": 0.10,  # end to end ÷ the plain .bin's
    "delta_bytes": 0.05,  # bytes over the link ÷ the image size
    "xz_bytes": 0.70,
}


def sensor_images(firmware_dir: Path = FIRMWARE_DIR) -> tuple[bytes, bytes]:
    """The prebuilt sensor firmware pair (old, new)."""
    return ((firmware_dir / f"sensor-{OLD}.bin").read_bytes(), (firmware_dir / f"sensor-{NEW}.bin").read_bytes())


def offered_file(variant: str, old: bytes, new: bytes) -> tuple[bytes, str]:
    """What the user uploads to Notehub for ``variant``, and its name."""
    if variant == "xz":
        return pack(new), f"sensor-{NEW}.ndfu"
    if variant == "delta":
        return pack(new, old), f"sensor-{NEW}-from-{OLD}.ndfu"
    return new, f"sensor-{NEW}.bin"


class _FlashSteps:
    """An events sink that keeps the flash stage's final page counts."""

    def __init__(self) -> None:
        self.pages: dict[str, int] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        if event["type"] == "step" and event["step"] == "flash" and event.get("state") == "done":
            self.pages = {k: event[k] for k in ("pages_written", "pages_unchanged") if k in event}


def _rig(workdir: Path, name: str, offered: bytes, offered_name: str, old: bytes, lines: bool,
         bootloader: str) -> SimulatedRig:
    return SimulatedRig(workdir, RigSetup(offered, old, offered_name, card={"profile": name},
                                          bootloader=bootloader, lines=lines))


def _card_spec(rig: SimulatedRig, name: str) -> str:
    """The agent's --notecard: the card's pty, or for an I2C profile the same card on the simulated bus."""
    if not profile(name).is_i2c:
        return rig.notecard_port
    registry.register("notecard", f"bench-update-{id(rig)}", rig.card)
    return f"i2c:sim://notecard?name=bench-update-{id(rig)}"


def run_ours(name: str, variant: str, old: bytes, new: bytes, workdir: Path,
             bootloader: str = BOOTLOADER) -> dict[str, Any]:
    """One update by the agent on a fresh rig."""
    from notedfu.update.agent import Updater

    offered, offered_name = offered_file(variant, old, new)
    steps = _FlashSteps()
    with _rig(workdir, name, offered, offered_name, old, True, bootloader) as rig:
        config = Config()
        config.notecard.spec = _card_spec(rig, name)
        config.target.spec, config.target.boot0, config.target.reset = (rig.target_port, rig.boot0_line,
                                                                         rig.reset_line)
        config.confirm.console, config.confirm.pattern, config.confirm.timeout = rig.console, BANNER, 30.0
        config.agent.state_dir = str(workdir / "state")
        Staging(workdir / "state").stage_bytes(old, source="NOTECARD")  # as installing 2.0.0 left it
        JobStore(workdir / "state").set_installed(OLD, md5_hex(old))
        started = time.monotonic()
        try:
            outcome = Updater(config, Events(steps)).run()
        finally:
            registry.forget("notecard", f"bench-update-{id(rig)}")  # a no-op for a serial profile
        seconds = time.monotonic() - started
        job = outcome.job
        parts = {part: sum(max(0.0, job.stages[s].ended - job.stages[s].started) for s in stages
                           if job.stages[s].state == "done") for part, stages in PARTS.items()}
        ok = outcome.state == "success" and rig.flash_file.read_bytes()[:len(new)] == new
        return {"variant": variant, "ok": ok, "error": job.error or None, "file_bytes": len(offered),
                "link_bytes": rig.card.wire_bytes, "pages_written": steps.pages.get("pages_written"),
                "parts": parts, "seconds": seconds}


def run_blues(name: str, old: bytes, new: bytes, workdir: Path, bootloader: str = BOOTLOADER) -> dict[str, Any]:
    """The anchor: note-python's python-dfu sequence, stm32flash writing every page, QEMU booting it."""
    import notecard
    import serial

    from notedfu.bench import _peer_transfer
    from notedfu.notecard.i2c_link import Smbus2Adapter
    from notedfu.sim.i2c import SimI2CBus

    with _rig(workdir, name, new, f"sensor-{NEW}.bin", old, False, bootloader) as rig:
        image = workdir / "image.bin"
        started = time.monotonic()
        if profile(name).is_i2c:
            card = notecard.OpenI2C(Smbus2Adapter(SimI2CBus(rig.card)), 0, 0)
        else:
            port = serial.Serial(rig.notecard_port, 9600)
            card = notecard.OpenSerial(port, lock_path=str(workdir / "serial.lock"))
        _peer_transfer(card, len(new), image)
        downloaded = time.monotonic()
        flashed = subprocess.run(["stm32flash", "-b", "115200", "-m", "8n1", "-w", str(image), "-v", "-g", "0x0",
                                  rig.target_port.partition("?")[0]], capture_output=True, text=True, timeout=900)
        written = time.monotonic()
        banner = boot(rig.flash_file, BANNER.format(version=NEW.replace(".", r"\.")), timeout=30)
        ended = time.monotonic()
        pages = -(-len(new) // 1024)
        ok = flashed.returncode == 0 and banner.matched and rig.flash_file.read_bytes()[:len(new)] == new
        return {"variant": "blues", "ok": ok, "error": None if ok else (flashed.stdout + flashed.stderr)[-300:],
                "file_bytes": len(new), "link_bytes": rig.card.wire_bytes, "pages_written": pages,
                "parts": {"card": downloaded - started, "flash": written - downloaded, "boot": ended - written,
                          "report": 0.0},
                "seconds": ended - started}


def delta_cost(size: int = 1 << 20) -> dict[str, float]:
    """Host CPU seconds and peak RSS (MiB) to apply and check a delta on a ``size``-byte image (a fix release's
    scattered small edits to firmware-like bytes), in this process: run it in a fresh one."""
    import random
    import resource

    from notedfu.bench import make_image
    from notedfu.protocol.ndfu import unpack

    old = b"\x00" + make_image(size - 1)
    edits = random.Random(7)
    new = bytearray(old)
    for _ in range(20):
        at = edits.randrange(len(new))
        new[at:at + 4] = edits.randbytes(6)
    new = bytes(new[:size])
    packed = pack(new, old)
    started = time.process_time()
    _, image = unpack(packed, lambda header: old)
    cpu = time.process_time() - started
    assert image == new
    return {"bytes": size, "update_file": len(packed), "cpu_s": round(cpu, 3),
            "rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _delta_cost_in_a_fresh_process() -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", "import json; from notedfu.bench_update import delta_cost; "
                                                 "print(json.dumps(delta_cost()))"],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def run_update_bench(profiles: list[str] | None = None, variants: list[str] | None = None,
                     as_json: bool = False, bootloader: str = BOOTLOADER) -> int:
    """Run the benchmark and print its table; exit code 0 if every update ended with the new image booted."""
    if not qemu_available():
        print("notedfu bench update needs qemu-system-arm (the boot is part of the update)", file=sys.stderr)
        return 2
    old, new = sensor_images()
    chosen = [v for v in (variants or VARIANTS) if v != "blues" or shutil.which("stm32flash")]
    rows = []
    for name in profiles or PROFILES:
        for variant in chosen:
            with tempfile.TemporaryDirectory(prefix="notedfu-bench-update-") as tmp:
                row = run_blues(name, old, new, Path(tmp), bootloader) if variant == "blues" else \
                    run_ours(name, variant, old, new, Path(tmp), bootloader)
            row.update(profile=name, image_bytes=len(new), bootloader=bootloader)
            rows.append(row)
            if not as_json:
                print(f"  {name} {variant}: {row['seconds']:.2f} s, {row['link_bytes']} bytes over the link"
                      + ("" if row["ok"] else f" FAILED {row['error']}"), file=sys.stderr, flush=True)
    cost = _delta_cost_in_a_fresh_process()
    if as_json:
        print(json.dumps({"updates": rows, "delta_cost": cost}, indent=1))
    else:
        print(format_table(rows))
        print(f"applying a delta to a {cost['bytes'] // 1024} KiB image ({cost['update_file']}-byte update file): "
              f"{cost['cpu_s']:.3f} s of CPU (target ≤ 2), peak RSS {cost['rss_mib']:.1f} MiB (target ≤ 80), "
              "in a fresh process")
    return 0 if all(row["ok"] for row in rows) else 1


def format_table(rows: list[dict[str, Any]]) -> str:
    """The table, each row's ratio to the plain .bin of its profile, and the uart9600 targets checked."""
    head = (f"{'profile':<10} {'file':<6} {'file B':>7} {'link B':>7} {'link/img':>8} {'pages':>5} {'card s':>7} "
            f"{'flash s':>7} {'boot s':>6} {'total s':>7} {'÷ bin':>6}")
    lines = [head, "-" * len(head)]
    plain = {row["profile"]: row["seconds"] for row in rows if row["variant"] == "bin"}
    checks = []
    for row in rows:
        parts, base = row["parts"], plain.get(row["profile"])
        ratio = row["seconds"] / base if base else float("nan")
        per_image = row["link_bytes"] / row["image_bytes"]
        lines.append(f"{row['profile']:<10} {row['variant']:<6} {row['file_bytes']:>7} {row['link_bytes']:>7} "
                     f"{per_image:>8.3f} {row['pages_written'] if row['pages_written'] is not None else '-':>5} "
                     f"{parts['card']:>7.2f} {parts['flash']:>7.2f} {parts['boot']:>6.2f} {row['seconds']:>7.2f} "
                     f"{ratio:>6.3f}" + ("" if row["ok"] else "  FAILED"))
        if row["profile"] == "uart9600" and row["variant"] == "delta":
            checks.append(("delta time ÷ bin", ratio, TARGETS["delta_seconds"]))
            checks.append(("delta link bytes ÷ image", per_image, TARGETS["delta_bytes"]))
        if row["profile"] == "uart9600" and row["variant"] == "xz":
            checks.append(("xz link bytes ÷ image", per_image, TARGETS["xz_bytes"]))
    lines.append("")
    bootloader = rows[0]["bootloader"] if rows else BOOTLOADER
    lines.append(f"STM32F100, bootloader {BOOTLOADERS[bootloader]}; 115200 baud; image sensor-{NEW} "
                 f"{rows[0]['image_bytes'] if rows else 0} bytes over sensor-{OLD}")
    lines += [f"target (uart9600) {what} ≤ {want:.2f}: {value:.3f} {'ok' if value <= want else 'MISSED'}"
              for what, value, want in checks]
    return "\n".join(lines)
