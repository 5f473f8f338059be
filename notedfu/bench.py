"""``notedfu bench download``: transfer speed against the wire's lower bound and a peer.

For each link profile it runs, each in a fresh interpreter so CPU time and
peak RSS belong to that client alone:

* **ours** — :class:`~notedfu.notecard.dfu.Downloader` (binary mode, the
  largest chunk the card takes, verified and journalled to disk);
* **peer** — the transfer as Blues' ``python-dfu`` example does it: stock
  note-python ``OpenSerial``/``OpenI2C``, 4096-byte base64 ``dfu.get``
  chunks, md5 per chunk.

Serial profiles talk to ``notedfu sim notecard --pty`` in another process;
I2C profiles to the in-process simulated bus (its CPU time is counted in).

The **lower bound** is the ideal request sequence (status, hub.get, hub.set,
the wait until DFU mode is active, ready probe, chunks of the card's maximum
in its most compact encoding, mode restore) run through the simulator's own
engine with no I/O: every byte both ways at the link's cost (UART: 10 bits a
byte; I2C: START, address, 9 bits a byte, STOP, the 2-byte header of every
read, ≤ 253 bytes a transfer, and the 20 ms Blues requires after each request
chunk), plus the card time the model charges. It is a bound *of the model*
(see :mod:`notedfu.sim.timing` for where each figure comes from).
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from notedfu.protocol.notecard import add_crc
from notedfu.specs import parse_spec
from notedfu.sim.card_config import SimConfig
from notedfu.sim.clock import ManualClock
from notedfu.sim.notecard import NotecardSim
from notedfu.sim.timing import LinkProfile, profile

DEFAULT_SIZES = {"uart9600": 64 * 1024, "aux115200": 256 * 1024, "usb": 256 * 1024, "i2c100k": 128 * 1024,
                 "i2c400k": 256 * 1024}
TARGETS = {  # (bound / ours at least, ours / peer at most)
    "uart9600": (0.90, 0.80),
    # The model's own bound is 0.78 of the peer here since both wait the 5 s the card needs for DFU
    # mode: 0.70 (set before that wait was modeled) cannot be met by any client.
    "aux115200": (0.90, 0.80),
    "usb": (0.80, 0.70),
    "i2c100k": (0.80, 0.80),
    "i2c400k": (0.80, 0.80),
}
I2C_CHUNK = 253  # bytes per serial-over-I2C transfer (note-c NOTE_I2C_MAX_MAX)
I2C_AFTER_CHUNK = 0.020  # Blues: "Each chunk should observe a 20ms delay"
PEER_CHUNK = 4096


def make_image(size: int, seed: int = 1) -> bytes:
    """Reproducible incompressible test data."""
    return random.Random(seed).randbytes(size)


# ------------------------------------------------------------------ the bound
def _i2c_write_seconds(link: LinkProfile, nbytes: int) -> float:
    """A request of ``nbytes`` over serial-over-I2C: ``[N, data]`` transfers, 20 ms after each."""
    chunks = [min(I2C_CHUNK, nbytes - i) for i in range(0, nbytes, I2C_CHUNK)]
    return sum(link.i2c_seconds([1 + n]) + I2C_AFTER_CHUNK for n in chunks)


def _i2c_read_seconds(link: LinkProfile, nbytes: int) -> float:
    """An answer of ``nbytes``: one query, then ``[0, N]`` + ``N + 2``-byte reads back to back."""
    reads = [min(I2C_CHUNK, nbytes - i) for i in range(0, nbytes, I2C_CHUNK)]
    return link.i2c_seconds([2, 2], 2) + sum(link.i2c_seconds([2, n + 2], n + 2) for n in reads)


def lower_bound(image: bytes, link: LinkProfile, max_chunk: int = 8192) -> tuple[float, str]:
    """Seconds of the ideal transfer on ``link``, and the encoding that gives it."""
    best: tuple[float, str] | None = None
    for encoding in ("binary", "base64"):
        clock = ManualClock(1e6)  # no server runs here: the card's time is what the ideal sequence spent
        card = NotecardSim(SimConfig(image=image, max_chunk=max_chunk), link, clock=clock)
        seq = 0
        seconds = 0.0

        def ask(req: dict[str, Any]) -> dict[str, Any]:
            nonlocal seq, seconds
            line = add_crc(json.dumps(req, separators=(",", ":")), seq).encode() + b"\n"
            reply = card.handle(line[:-1], now=clock())
            seq += 1
            answer = reply.data + reply.tail
            if link.is_i2c:
                wire = _i2c_write_seconds(link, len(line)) + _i2c_read_seconds(link, len(reply.data))
                wire += _i2c_read_seconds(link, len(reply.tail)) if reply.tail else 0.0
            else:
                wire = link.wire_seconds(len(line) + len(answer))
            seconds += wire + reply.card_seconds
            clock.advance(wire + reply.card_seconds)
            return json.loads(reply.data)

        ask({"req": "dfu.status", "name": "user"})
        ask({"req": "hub.get"})
        ask({"req": "hub.set", "mode": "dfu"})
        seconds += card.ready_delay  # DFU storage powering up
        clock.advance(card.ready_delay)
        assert "err" not in ask({"req": "dfu.get", "length": 0})
        for offset in range(0, len(image), max_chunk):
            length = min(max_chunk, len(image) - offset)
            if encoding == "binary":
                ask({"req": "dfu.get", "offset": offset, "length": length, "binary": True})
                ask({"req": "card.binary.get", "offset": 0, "length": length})
            else:
                ask({"req": "dfu.get", "offset": offset, "length": length})
        ask({"req": "hub.set", "mode": "periodic"})
        if best is None or seconds < best[0]:
            best = (seconds, encoding)
    assert best is not None
    return best


# ------------------------------------------------------------------ clients (child side)
def _peer_transfer(card: Any, length: int, out: Path) -> None:
    """Blues' python-dfu sequence, verbatim in spirit: 4 KiB base64 chunks, md5 each."""
    import binascii
    import hashlib

    status = card.Transaction({"req": "dfu.status"})
    assert status.get("mode") == "ready", status
    card.Transaction({"req": "hub.set", "mode": "dfu"})
    while "err" in card.Transaction({"req": "dfu.get", "length": 0}):
        time.sleep(2.5)
    whole = hashlib.md5()
    with open(out, "wb") as stream:
        for offset in range(0, length, PEER_CHUNK):
            size = min(PEER_CHUNK, length - offset)
            rsp = card.Transaction({"req": "dfu.get", "offset": offset, "length": size})
            data = binascii.a2b_base64(rsp["payload"])
            if hashlib.md5(data).hexdigest() != rsp["status"]:
                raise RuntimeError("content checksum mismatch")
            whole.update(data)
            stream.write(data)
    card.Transaction({"req": "hub.set", "mode": "dfu-completed"})
    if whole.hexdigest() != status["body"]["md5"]:
        raise RuntimeError("image md5 mismatch")


def _child(who: str, spec: str, profile_name: str, image_path: str) -> dict[str, Any]:
    """Run one transfer in this process; report wall and CPU seconds and peak RSS."""
    image = Path(image_path).read_bytes()
    work = Path(tempfile.mkdtemp(prefix="notedfu-bench-"))
    if who == "ours":
        from notedfu.notecard.dfu import Downloader, FetchOptions
        from notedfu.notecard.link import open_notecard
        from notedfu.notecard.staging import Staging

        if spec.startswith("i2c:"):
            pacing = parse_spec(spec).text_option("pacing", "blues")
            query = urllib.parse.urlencode({"image": image_path, "profile": profile_name, "pacing": pacing})
            spec = f"i2c:sim://notecard?{query}"
        card = open_notecard(spec)
        downloader = Downloader(card, Staging(work), options=FetchOptions())  # as shipped
        cpu0, t0 = time.process_time(), time.monotonic()
        result = downloader.fetch()
        seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
        ok = result.path.read_bytes() == image
        extra = {"chunk": result.chunk_size, "binary": result.binary}
    else:
        import notecard
        import serial

        from notedfu.notecard.i2c_link import Smbus2Adapter
        from notedfu.sim.i2c import SimI2CBus
        from notedfu.sim.notecard import card_from_options

        os.environ.setdefault("NOTECARD_SERIAL_LOCK_PATH", str(work / "serial.lock"))
        if spec.startswith("i2c:"):
            bus = SimI2CBus(card_from_options({"image": image_path, "profile": profile_name}))
            card = notecard.OpenI2C(Smbus2Adapter(bus), 0, 0)
        else:
            card = notecard.OpenSerial(serial.Serial(spec, 9600), lock_path=str(work / "serial.lock"))
        cpu0, t0 = time.process_time(), time.monotonic()
        _peer_transfer(card, len(image), work / "image.bin")
        seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
        ok = (work / "image.bin").read_bytes() == image
        extra = {"chunk": PEER_CHUNK, "binary": False}
    return {"seconds": seconds, "cpu": cpu, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "ok": ok, **extra}


# ------------------------------------------------------------------ driver
def _run_child(who: str, profile_name: str, image_path: Path, pacing: str = "blues") -> dict[str, Any]:
    link = profile(profile_name)
    server = None
    try:
        if link.is_i2c:
            spec = f"i2c:sim?pacing={pacing}"
        else:
            server = subprocess.Popen([sys.executable, "-m", "notedfu", "sim", "notecard", "--pty",
                                       "--image", str(image_path), "--profile", profile_name],
                                      stdout=subprocess.PIPE, text=True)
            spec = server.stdout.readline().strip()
        out = subprocess.run([sys.executable, "-m", "notedfu.bench", "child", who, spec, profile_name,
                              str(image_path)], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{who} on {profile_name} failed:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if server:
            server.terminate()
            server.wait(timeout=10)


def run_download_bench(profiles: list[str] | None, *, size: int | None = None, peer: bool = True,
                       as_json: bool = False, pacing: str = "blues") -> int:
    """Run the download benchmark and print its table; exit code 0 if every run was correct."""
    rows = []
    for name in profiles or list(DEFAULT_SIZES):
        link = profile(name)
        length = size or DEFAULT_SIZES.get(name, 256 * 1024)
        with tempfile.TemporaryDirectory() as tmp:
            image_path = Path(tmp) / "image.bin"
            image_path.write_bytes(make_image(length))
            bound, encoding = lower_bound(image_path.read_bytes(), link)
            ours = _run_child("ours", name, image_path, pacing)
            theirs = _run_child("peer", name, image_path) if peer else None
        rows.append({"profile": name, "bytes": length, "bound_s": bound, "bound_encoding": encoding,
                     "ours": ours, "peer": theirs})
        if not as_json:
            print(f"  {name}: ours {ours['seconds']:.2f} s" +
                  (f", peer {theirs['seconds']:.2f} s" if theirs else ""), file=sys.stderr, flush=True)
    if as_json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows))
    return 0 if all(r["ours"]["ok"] and (r["peer"] is None or r["peer"]["ok"]) for r in rows) else 1


def format_table(rows: list[dict[str, Any]]) -> str:
    """The benchmark table, with each target checked."""
    head = (f"{'profile':<10} {'image':>8} {'ours s':>8} {'bound s':>8} {'bound/ours':>10} {'peer s':>8} "
            f"{'ours/peer':>9} {'CPU s/MiB':>9} {'RSS MiB':>7}  targets")
    lines = [head, "-" * len(head)]
    for row in rows:
        ours, peer = row["ours"], row["peer"]
        ratio = row["bound_s"] / ours["seconds"]
        versus = ours["seconds"] / peer["seconds"] if peer else None
        mib = row["bytes"] / 2**20
        want_bound, want_peer = TARGETS.get(row["profile"], (None, None))
        checks = []
        if want_bound:
            checks.append(f"bound/ours≥{want_bound:.2f} {'ok' if ratio >= want_bound else 'MISSED'}")
        if want_peer and versus is not None:
            checks.append(f"ours/peer≤{want_peer:.2f} {'ok' if versus <= want_peer else 'MISSED'}")
        if not ours["ok"] or (peer and not peer["ok"]):
            checks.append("WRONG DATA")
        lines.append(
            f"{row['profile']:<10} {row['bytes'] // 1024:>5} KiB {ours['seconds']:>8.2f} {row['bound_s']:>8.2f} "
            f"{ratio:>10.3f} {peer['seconds'] if peer else float('nan'):>8.2f} "
            f"{versus if versus is not None else float('nan'):>9.3f} {ours['cpu'] / mib:>9.3f} "
            f"{ours['rss_kib'] / 1024:>7.1f}  {'; '.join(checks)}")
    lines.append("bound = ideal request sequence through the simulator's model (every byte both ways at the "
                 "link rate + card time), best encoding; CPU and RSS are ours, per fresh process.")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "child":
        print(json.dumps(_child(*sys.argv[2:6])))
    else:
        raise SystemExit("usage: python -m notedfu.bench child ours|peer SPEC PROFILE IMAGE")
