"""The agent's configuration: TOML, validated at load with errors naming the key.

Example (``/etc/notedfu/notedfu.toml``)::

    [notecard]
    spec = "/dev/ttyACM0"

    [target]
    spec = "/dev/ttyAMA0"
    boot0 = "gpiochip0:17"
    reset = "gpiochip0:27"

    [policy]
    mode = "auto"                 # or "manual": wait for `notedfu approve`
    allow_downgrade = false
    public_key = "…"              # `notedfu keygen` prints it; unsigned images are refused

    [confirm]
    console = "/dev/ttyUSB1"      # where the application prints its banner
    pattern = "demo {version} booted"
    timeout = 30

    [agent]
    state_dir = "/var/lib/notedfu"
    poll_interval = 60            # seconds between dfu.status polls of `notedfu run`
    socket = "/run/notedfu/notedfu.sock"
    events_file = "/var/log/notedfu/events.jsonl"
    retry_limit = 5               # attempts at one image before giving up on it (then Notehub hears)
    retry_backoff = 60            # seconds before the 2nd attempt, doubling up to retry_backoff_max
"""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from notedfu.errors import ConfigError
from notedfu.specs import parse_region

DEFAULT_PATH = Path("/etc/notedfu/notedfu.toml")


@dataclass
class NotecardConfig:
    """``[notecard]``: how to reach the card."""

    spec: str | None = None
    baud: int | None = None
    timeout: float = 30.0
    ready_timeout: float = 120.0  # how long DFU mode may take to become active


@dataclass
class TargetConfig:
    """``[target]``: the STM32 and its wiring."""

    spec: str | None = None
    baud: int | None = None
    boot0: str | None = None
    reset: str | None = None
    enter: str | None = None
    run: str | None = None
    verify: str = "auto"
    preserve: list[str] = field(default_factory=list)


@dataclass
class PolicyConfig:
    """``[policy]``: when an offered image may be installed."""

    mode: str = "auto"
    allow_downgrade: bool = False
    outboard_dfu: str = "warn"  # or "disable": switch the card's Outboard DFU off
    public_key: str | None = None  # base64 Ed25519 key: only images it signed are flashed


@dataclass
class ConfirmConfig:
    """``[confirm]``: how to know the new firmware runs."""

    console: str | None = None  # serial spec, or "qemu:FLASH_FILE" on the simulated rig
    pattern: str = "{version}"
    timeout: float = 30.0
    baud: int = 115200


@dataclass
class AgentConfig:
    """``[agent]``: the agent itself."""

    state_dir: str | None = None
    poll_interval: float = 60.0
    socket: str = "/run/notedfu/notedfu.sock"  # the control socket of `notedfu run`
    events_file: str | None = None  # also append every event here, one JSON line each
    retry_limit: int = 5  # attempts at one job before a transient failure counts as permanent
    retry_backoff: float = 60.0  # seconds before the second attempt; doubles with each failure
    retry_backoff_max: float = 3600.0  # the longest wait between attempts


@dataclass
class Config:
    """The whole configuration."""

    notecard: NotecardConfig = field(default_factory=NotecardConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)


_CHOICES = {("policy", "mode"): ("auto", "manual"), ("policy", "outboard_dfu"): ("warn", "disable"),
            ("target", "verify"): ("auto", "crc", "read", "none")}


def _check(section: str, key: str, value: Any, default: Any, what: str = "config") -> Any:
    where = f"{section}.{key}"
    kind = type(default) if default is not None else None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{what} key {where}: must be true or false, not {value!r}")
    elif isinstance(default, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{what} key {where}: must be a positive number, not {value!r}")
        value = float(value)
    elif isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{what} key {where}: must be a list of strings")
    elif kind is int or key == "baud":
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{what} key {where}: must be a positive integer, not {value!r}")
    elif not isinstance(value, str):
        raise ConfigError(f"{what} key {where}: must be a string, not {value!r}")
    if (section, key) in _CHOICES and value not in _CHOICES[(section, key)]:
        raise ConfigError(f"{what} key {where}: must be one of {', '.join(_CHOICES[(section, key)])}, not {value!r}")
    return value


def _default(part: Any, name: str) -> Any:
    spec = next(f for f in fields(part) if f.name == name)
    return spec.default_factory() if spec.default_factory is not MISSING else spec.default  # type: ignore[misc]


def validate(config: Config) -> None:
    """Check every value again — command-line overrides get the same checks as the file's keys."""
    for section in fields(Config):
        part = getattr(config, section.name)
        for item in fields(part):
            value = getattr(part, item.name)
            if value is not None:
                setattr(part, item.name, _check(section.name, item.name, value, _default(part, item.name)))
    for region in config.target.preserve:
        try:
            parse_region(region)
        except ValueError as exc:
            raise ConfigError(f"config key target.preserve: {exc}") from None


def parse_sections(data: dict[str, Any], schema: Any, what: str = "config") -> Any:
    """A TOML document checked against ``schema`` (a dataclass of section dataclasses, each key's default
    giving its type) — the one validator of every TOML file notedfu reads (this config, the HIL rig file)."""
    parsed = schema()
    names = [f.name for f in fields(schema)]
    for section, value in data.items():
        if section not in names:
            raise ConfigError(f"{what}: unknown section [{section}] (known: {', '.join(names)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{what}: [{section}] must be a table")
        part = getattr(parsed, section)
        known = {f.name: f for f in fields(part)}
        for key, item in value.items():
            if key not in known:
                raise ConfigError(f"{what} key {section}.{key}: unknown (known: {', '.join(known)})")
            setattr(part, key, _check(section, key, item, getattr(part, key), what))
    return parsed


def parse_config(data: dict[str, Any]) -> Config:
    """Validate a parsed TOML document."""
    config: Config = parse_sections(data, Config)
    for region in config.target.preserve:
        try:
            parse_region(region)
        except ValueError as exc:
            raise ConfigError(f"config key target.preserve: {exc}") from None
    if config.policy.public_key is not None:
        from notedfu.update.signature import public_key_from_text

        public_key_from_text(config.policy.public_key)  # raises E_CONFIG naming the key
    return config


def read_toml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A TOML file's document; ``ConfigError`` saying why it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path}: not valid TOML ({exc})") from exc


def load_config(path: str | Path | None) -> Config:
    """Load ``path``; no path and no default file → defaults."""
    if path is None:
        if not DEFAULT_PATH.exists():
            return Config()
        path = DEFAULT_PATH
    return parse_config(read_toml(path))
