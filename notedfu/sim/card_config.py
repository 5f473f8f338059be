"""The simulated Notecard's settings: what a card is (firmware generation, buffers, limits) and the options
that make one (``sim://notecard?…``, ``notedfu sim notecard``), with the error texts a real card answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from notedfu.sim.faults import Fault, parse_faults

HUB_MODES = ("periodic", "continuous", "minimum", "off")
DEFAULT_HUB_MODE = "periodic"
BINARY_MAX = 130554  # card.binary capacity, as in the notecard-schema sample
INPUT_BUFFER = 1500  # the card's serial input buffer, bytes
DFU_STORAGE = 1536 * 1024  # the card's host-firmware storage, bytes
SIDELOAD_CHUNK = 4096  # the chunk dfu.put asks for in base64 mode

ERR_NOT_DFU = "not currently in the DFU operating mode (see hub.set) {hub-mode}"
ERR_NOT_READY = "DFU mode is not yet fully active: starting communications {wait-module} {connecting} {dfu-not-ready}"
TRACE_LINE = b"sync: wireless modem now ON {modem-on}\r\n"  # a Notecard trace line (discuss.blues.com/t/109)

FIRMWARES = {
    # name: (card.binary, dfu.get binary:true, card.version)
    "base64": (False, False, (5, 1, 1)),  # before card.binary (Notecard firmware 5.3.1)
    "binary-store": (True, False, (8, 1, 3)),  # card.binary, but dfu.get ignores binary:true
    "current": (True, True, (9, 1, 1)),  # dfu.get binary:true (notecard-schema PR #256, apiVersion 9.1.1)
}
"""Card firmware generations, by what they offer the host."""

REFUSALS = {
    # How a card answers a dfu.get longer than it serves, in the forms hosts meet:
    "tagged": '{{"err":"dfu.get: length {length} exceeds the maximum chunk ({max}) {{dfu-dl-chunk-length}}"}}',
    "untagged": '{{"err":"length exceeds maximum ({max})"}}',
    "incomplete": '{{"err":"transaction incomplete"}}',  # discuss.blues.com/t/109, 8192-byte reads
    "io": '{{"err":"dfu.get: cannot read {length} bytes {{io}}"}}',
    "cutoff": "",  # the answer starts and stops: the card's buffer ran out mid-line
}



@dataclass
class SimConfig:
    """Everything that shapes one simulated Notecard."""

    image: bytes | None = None
    image_name: str = "firmware.bin"
    download_seconds: float = 0.0  # Notehub → card download time once staged
    hub_mode: str = DEFAULT_HUB_MODE
    ready_delay: float | None = None  # dfu.get answers {dfu-not-ready} this long after hub.set dfu (None: profile's)
    dfu_timeout: float = 15 * 60  # DFU mode ends this long after the last hub.set dfu
    max_chunk: int = 8192  # largest dfu.get length served (notecard-schema's dfu.get binary sample reads 8192)
    refusal: str = "tagged"  # how a longer dfu.get is refused (REFUSALS)
    binary: bool = True  # firmware with card.binary
    dfu_binary: bool = True  # firmware whose dfu.get takes binary:true
    strict_timing: bool = False  # a host faster than Blues' pacing is answered as a stressed card fails
    clock_set: bool = True  # the card knows the time (it has synced once); dfu.put needs it
    snappy: bool = False  # old firmware that asks dfu.put payloads to be snappy-compressed
    faults: list[Fault] = field(default_factory=list)

    @classmethod
    def from_options(cls, opts: dict[str, str | list[str]]) -> "SimConfig":
        """Build a config from string options (URL query or command line)."""
        def one(key: str) -> str | None:
            value = opts.get(key)
            return value[-1] if isinstance(value, list) else value

        config = cls()
        if (path := one("image")) is not None:
            config.image = Path(path).read_bytes()
            config.image_name = Path(path).name
        for key, attr, kind in (
            ("download", "download_seconds", float),
            ("ready_delay", "ready_delay", float),
            ("dfu_timeout", "dfu_timeout", float),
            ("max_chunk", "max_chunk", int),
        ):
            if (value := one(key)) is not None:
                setattr(config, attr, kind(value))
        if (mode := one("mode")) is not None:
            if mode not in HUB_MODES:
                raise ValueError(f"mode must be one of {', '.join(HUB_MODES)}, not {mode!r}")
            config.hub_mode = mode
        if (refusal := one("refusal")) is not None:
            if refusal not in REFUSALS:
                raise ValueError(f"refusal must be one of {', '.join(REFUSALS)}, not {refusal!r}")
            config.refusal = refusal
        if (firmware := one("firmware")) is not None:
            if firmware not in FIRMWARES:
                raise ValueError(f"firmware must be one of {', '.join(FIRMWARES)}, not {firmware!r}")
            config.binary, config.dfu_binary, _ = FIRMWARES[firmware]
        for key, attr in (("binary", "binary"), ("time", "clock_set"), ("snappy", "snappy"),
                          ("strict_timing", "strict_timing")):
            if (flag := one(key)) is not None:
                setattr(config, attr, flag.lower() in ("1", "true", "yes", "on"))
        if not config.binary:
            config.dfu_binary = False
        faults = opts.get("fault")
        config.faults = parse_faults(faults if isinstance(faults, list) else ([faults] if faults else []))
        return config


@dataclass
class Reply:
    """What the card sends back for one request line."""

    data: bytes = b""  # one or more lines (a trace line, the answer)
    card_seconds: float = 0.0
    restarted: bool = False  # the card rebooted: drop anything queued
    binary_follows: int = 0  # card.binary.put: this many raw bytes (COBS + newline) come next
    tail: bytes = b""  # card.binary.get: the binary data after the answer line


CARD_OPTIONS = frozenset({"image", "profile", "latency", "per_kib", "rate", "stretch", "download", "ready_delay",
                          "dfu_timeout", "max_chunk", "refusal", "firmware", "binary", "mode", "time", "snappy",
                          "strict_timing", "fault", "name", "pacing", "address"})
"""Every ``sim://notecard`` option (``pacing`` and ``address`` belong to the I2C link that opens it)."""
