"""``notedfu bench flash``: flash + verify speed against the wire's lower bound and two peers.

Each run gets a fresh ``notedfu sim stm32 --pty`` process (STM32F100, 128 KiB,
115200 baud 8E1, datasheet erase/program times) and one client process, timed
from start to exit: ours (``notedfu flash --no-run``), ``stm32flash -v -w``
(``-b 0``: Linux ptys refuse parity; the emulator models it) and stm32loader
(``-e -w -v``; a pty has no RTS/DTR, so the harness makes those two ioctls
no-ops — as on an adapter without those wires; its protocol code is untouched).

The lower bound is the fewest bytes the protocol needs — sync, identify,
erase the covered pages, one Write Memory per non-empty 256-byte block, and
verification (one Get Checksum when the bootloader has it, else reading every
image byte back) — at 11 bits per byte, plus the chip's erase and programming
times from the same table the emulator uses.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from notedfu.protocol.chips import CHIPS

CHIP = CHIPS[0x420]
BAUD = 115200
TARGETS = {"v3crc": 0.6, "v2": 1.0}  # ours / stm32flash at most
AGAIN_TARGET = 0.25  # the same image flashed a second time: its time ÷ the first's, at most (nothing is written)

_STM32LOADER = """
import serial, sys
class NoModemLines(serial.Serial):
    def _update_rts_state(self): pass
    def _update_dtr_state(self): pass
serial.Serial = NoModemLines
from stm32loader.main import main
main("-p", sys.argv[1], "-P", "none", "-e", "-w", "-v", "-n", "-q", "-f", "F1", sys.argv[2])
"""


def bench_image(size: int, half_empty: bool, seed: int = 11) -> bytes:
    """A bootable-looking image; ``half_empty`` blanks every other 2 KiB."""
    body = bytearray(random.Random(seed).randbytes(size - 8))
    if half_empty:
        for start in range(2048, len(body), 4096):
            body[start:start + 2048] = b"\xff" * len(body[start:start + 2048])
    return struct.pack("<II", 0x20002000, 0x08000101) + bytes(body)


def lower_bound(image: bytes, crc: bool) -> float:
    """Seconds the protocol needs at best for write + verify of ``image``."""
    byte = 11 / BAUD
    family = CHIP.family
    pages = -(-len(image) // CHIP.page_size)
    wire = 2 + 3 * 5  # sync; Get, Get Version, Get ID (commands and answers, roughly)
    wire += 2 + 1 + 2 + 2 * pages + 1 + 1  # one erase command for the pages
    seconds = pages * family.page_erase_seconds
    for at in range(0, len(image), 256):
        block = image[at:at + 256]
        if block.count(0xFF) != len(block):
            wire += 2 + 5 + 1 + len(block) + 1 + 3
            seconds += family.program_seconds_per_256 * len(block) / 256
    wire += (2 + 5 + 5 + 3 + 5) if crc else sum(9 + 3 + min(256, len(image) - at) for at in range(0, len(image), 256))
    return seconds + wire * byte


def _one_run(client: str, variant: str, image_path: Path, image: bytes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        flash_file = Path(tmp) / "flash.bin"
        server = subprocess.Popen([sys.executable, "-m", "notedfu", "sim", "stm32", "--pty", "--bootloader", variant,
                                   "--flash-file", str(flash_file), "--baud", str(BAUD)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            spec = server.stdout.readline().strip()
            device = spec.partition("?")[0]  # the peers get the pty's 8N1 their own way (-m 8n1, -P none)
            argv = {
                "ours": [sys.executable, "-m", "notedfu", "flash", str(image_path), "--target", spec, "--no-run",
                         "--json"],
                "stm32flash": ["stm32flash", "-b", str(BAUD), "-m", "8n1", "-w", str(image_path), "-v", device],
                "stm32loader": [sys.executable, "-c", _STM32LOADER, device, str(image_path)],
            }[client]
            started = time.monotonic()
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            seconds = time.monotonic() - started
            again = _again(argv) if client == "ours" and done.returncode == 0 else {}
        finally:
            server.terminate()
            server.wait(timeout=10)
        ok = done.returncode == 0 and flash_file.read_bytes()[:len(image)] == image
        return {"seconds": seconds, "ok": ok, "error": "" if ok else (done.stdout + done.stderr)[-500:], **again}


def _again(argv: list[str]) -> dict[str, Any]:
    """The same image flashed again on the same chip (still in its bootloader: --no-run): time and pages."""
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    written = next((e["pages_written"] for e in steps if e.get("type") == "step" and "pages_written" in e), None)
    return {"again_seconds": seconds, "again_pages_written": written if done.returncode == 0 else None}


LABELS = {"v2": "STM32F100 v2.2 (real)", "v3crc": "STM32F100 v3.1+0xA1 (what-if)"}
"""Which chip and bootloader each row's figures are for."""


def run_flash_bench(size: int = 128 * 1024, peers: bool = True, as_json: bool = False) -> int:
    """Run the flash benchmark and print its table; exit code 0 if every run left the right flash."""
    clients = ["ours"]
    if peers:
        clients += [c for c in ("stm32flash", "stm32loader") if c != "stm32flash" or shutil.which("stm32flash")]
        try:
            import stm32loader  # noqa: F401
        except ImportError:
            clients.remove("stm32loader")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("v2", "v3crc"):  # the real F100 bootloader first
            for half_empty in (False, True):
                image = bench_image(size, half_empty)
                path = Path(tmp) / f"image-{half_empty}.bin"
                path.write_bytes(image)
                row: dict[str, Any] = {"variant": variant, "image": "half-empty" if half_empty else "full",
                                       "bytes": size, "bound_s": lower_bound(image, variant == "v3crc")}
                for client in clients:
                    row[client] = _one_run(client, variant, path, image)
                    if not as_json:
                        print(f"  {variant} {row['image']}: {client} {row[client]['seconds']:.2f} s", file=sys.stderr,
                              flush=True)
                rows.append(row)
    print(json.dumps(rows, indent=1) if as_json else format_table(rows, clients))
    return 0 if all(row[c]["ok"] for row in rows for c in clients) else 1


def format_table(rows: list[dict[str, Any]], clients: list[str]) -> str:
    """The benchmark table with the targets checked."""
    head = (f"{'chip / bootloader':<28} {'image':<10} {'ours s':>7} {'bound s':>7} {'bound/ours':>10} "
            f"{'again s':>7} {'again/ours':>10} {'pages':>5}")
    for peer in clients[1:]:
        head += f" {peer + ' s':>13} {'ours/' + peer:>17}"
    lines = [head + "  target", "-" * (len(head) + 20)]
    for row in rows:
        ours = row["ours"]["seconds"]
        again = row["ours"].get("again_seconds", float("nan"))
        line = (f"{LABELS[row['variant']]:<28} {row['image']:<10} {ours:>7.2f} {row['bound_s']:>7.2f} "
                f"{row['bound_s'] / ours:>10.3f} {again:>7.2f} {again / ours:>10.3f} "
                f"{row['ours'].get('again_pages_written', '-'):>5}")
        for peer in clients[1:]:
            line += f" {row[peer]['seconds']:>13.2f} {ours / row[peer]['seconds']:>17.3f}"
        if "stm32flash" in row:
            want = TARGETS[row["variant"]]
            got = ours / row["stm32flash"]["seconds"]
            line += f"  ours/stm32flash≤{want:.1f} {'ok' if got <= want else 'MISSED'}"
        line += f"; again/ours≤{AGAIN_TARGET} {'ok' if again / ours <= AGAIN_TARGET else 'MISSED'}"
        if not all(row[c]["ok"] for c in clients):
            line += "  WRONG FLASH: " + "; ".join(f"{c}: {row[c]['error']}" for c in clients if not row[c]["ok"])
        lines.append(line)
    lines.append("again: ours run a second time with the same image on the same chip (pages: pages it wrote).")
    lines.append("Each run: a fresh emulator process (STM32F100, 115200 8E1; erase times from the family's datasheet "
                 "figures, mass erase 20 ms) and one client process, timed start to exit. The F100's real ROM "
                 "bootloader is v2.2 without Get Checksum (AN2606); the 3.1 + 0xA1 row is the same chip with a "
                 "newer part's command set, to show what the CRC command is worth.")
    return "\n".join(lines)


GANG_TARGET = 1.3  # N boards at once ÷ one board, at most


def _emulators(count: int, workdir: Path, variant: str) -> tuple[list[subprocess.Popen], list[str], list[Path]]:
    """``count`` fresh emulator processes (a board each): the processes, their --target specs, flash files."""
    processes, specs, files = [], [], []
    for i in range(count):
        flash_file = workdir / f"board{i}.bin"
        processes.append(subprocess.Popen([sys.executable, "-m", "notedfu", "sim", "stm32", "--pty", "--bootloader",
                                           variant, "--flash-file", str(flash_file), "--baud", str(BAUD)],
                                          stdout=subprocess.PIPE, text=True))
        specs.append(processes[-1].stdout.readline().strip())
        files.append(flash_file)
    return processes, specs, files


def _timed_flash(image_path: Path, specs: list[str]) -> tuple[float, bool]:
    argv = [sys.executable, "-m", "notedfu", "flash", str(image_path), "--no-run", "--json"]
    argv += [arg for spec in specs for arg in ("--target", spec)]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    return time.monotonic() - started, done.returncode == 0


def run_gang_bench(boards: int = 8, size: int = 64 * 1024, variant: str = "v2", as_json: bool = False) -> int:
    """``notedfu bench flash --boards N``: N emulated boards flashed at once ÷ one board alone."""
    image = bench_image(size, False)
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp) / "image.bin"
        image_path.write_bytes(image)
        for label, count in (("one", 1), ("gang", boards)):
            workdir = Path(tmp) / label
            workdir.mkdir()
            processes, specs, files = _emulators(count, workdir, variant)
            try:
                seconds, ok = _timed_flash(image_path, specs)
            finally:
                for process in processes:
                    process.terminate()
                    process.wait(timeout=10)
            ok = ok and all(f.read_bytes()[:len(image)] == image for f in files)
            runs[label] = {"boards": count, "seconds": round(seconds, 3), "ok": ok}
            if not as_json:
                print(f"  {count} board{'s' if count > 1 else ''}: {seconds:.2f} s", file=sys.stderr, flush=True)
    ratio = runs["gang"]["seconds"] / runs["one"]["seconds"]
    if as_json:
        print(json.dumps({**runs, "ratio": round(ratio, 3), "bytes": size, "variant": variant}, indent=1))
    else:
        print(f"{'boards':>6} {'seconds':>8}  (each: {LABELS[variant]}, {size // 1024} KiB, {BAUD} baud, its own "
              "emulator process)")
        for run in runs.values():
            print(f"{run['boards']:>6} {run['seconds']:>8.2f}" + ("" if run["ok"] else "  WRONG FLASH"))
        print(f"{boards} boards ÷ 1 board: {ratio:.3f} (target ≤ {GANG_TARGET}: "
              f"{'ok' if ratio <= GANG_TARGET else 'MISSED'}); {os.cpu_count()} CPUs")
    return 0 if all(run["ok"] for run in runs.values()) else 1
