"""Check before touching: every mistake a user makes is found before the first byte goes to the card or the
target, exits 2 naming what is wrong, and costs nothing — no request to the card, no page erased."""

from __future__ import annotations

import time

import pytest

from conftest import run_cli
from notedfu.errors import ExitCode
from rig import padded, toml


def untouched(r) -> None:
    assert r.card.requests == {} and r.chip.stats["erased_pages"] == 0 and r.chip.writes == 0
    assert r.card.image == r.offered and r.card.reports == []


@pytest.mark.parametrize("extra, where", [
    (("--target", ""), "target.spec: no target given"),
    (("--boot0", "bogus"), "target.boot0: 'bogus'"),
    (("--reset", "rts"), "a pseudo-terminal has no RTS/DTR lines"),
    (("--pattern", "notedfu-demo ({version} booted"), "confirm.pattern: not a regular expression"),
    (("--events-file", "/nonexistent-dir/events.jsonl"), "agent.events_file: /nonexistent-dir does not exist"),
    (("--confirm-timeout", "-5"), "must be a positive number of seconds"),
    (("--timeout", "0"), "must be a positive number of seconds"),
])
def test_an_agent_mistake_is_found_before_the_card_is_touched(rig, extra, where):
    r = rig()
    args = r.args(*extra)
    if extra[0] == "--target":
        index = args.index("--target")
        del args[index:index + 2]  # no target at all
    started = time.monotonic()
    done = __import__("subprocess").run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert where in done.stderr and time.monotonic() - started < 10
    untouched(r)


def test_a_config_with_several_mistakes_names_them_all(tmp_path):
    config = tmp_path / "notedfu.toml"
    config.write_text(toml({"target": {"spec": "/dev/nonexistent-tty", "boot0": "gpiochip0"},
                            "confirm": {"pattern": "(", "console": "/dev/ttyUSB9?buad=115200"}}))
    done = run_cli("config", "check", "--config", str(config), "--notecard", "/dev/ttyACM9?buad=9600")
    assert done.returncode == ExitCode.USAGE
    for needle in ("notecard.spec: unknown Notecard serial option buad (known: baud)",
                   "target.spec: /dev/nonexistent-tty does not exist", "target.boot0: 'gpiochip0'",
                   "confirm.pattern", "confirm.console: unknown console option buad"):
        assert needle in done.stderr, done.stderr
    assert done.stderr.startswith("notedfu: E_CONFIG: 5 problems: ")


def test_config_check_says_what_would_be_used(rig):
    r = rig()
    done = run_cli("config", "check", "--notecard", r.notecard_port, "--target", r.target_port)
    assert done.returncode == 0 and "OK" in done.stdout and r.target_port in done.stdout
    untouched(r)


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path):
    config = tmp_path / "latin1.toml"
    config.write_bytes("[confirm]\npattern = 'caf\xe9'\n".encode("latin-1"))
    done = run_cli("config", "check", "--config", str(config))
    assert done.returncode == ExitCode.USAGE and "not UTF-8" in done.stderr


def test_fetch_output_problems_are_found_before_the_download(rig, tmp_path):
    r = rig()
    for output in (str(tmp_path), "/nonexistent-dir/x.bin"):
        done = run_cli("fetch", "--notecard", r.notecard_port, "-o", output, "--state-dir", str(tmp_path / "s"))
        assert done.returncode == ExitCode.USAGE and "-o:" in done.stderr, done.stderr
    untouched(r)


@pytest.mark.parametrize("spec_extra, needle", [
    ("?buad=9600", "unknown Notecard serial option buad"),
])
def test_unknown_spec_options_are_refused(rig, spec_extra, needle):
    r = rig()
    done = run_cli("status", "--notecard", r.notecard_port + spec_extra)
    assert done.returncode == ExitCode.USAGE and needle in done.stderr and "E_BAD_SPEC" in done.stderr
    done = run_cli("status", "--notecard", "sim://notecard?imgae=fw.bin")
    assert done.returncode == ExitCode.USAGE and "unknown sim://notecard option imgae" in done.stderr
    untouched(r)


def test_numbers_are_checked_by_the_command_line(tmp_path):
    for args in (("fetch", "--chunk", "0"), ("fetch", "--timeout", "-1"), ("run", "--poll", "-3"),
                 ("flash", "x.bin", "--target", "/dev/null", "--retries", "-1"),
                 ("flash", "x.bin", "--target", "/dev/null", "--address=-0x100")):
        done = run_cli(*args)
        assert done.returncode == ExitCode.USAGE and ("must" in done.stderr or "negative" in done.stderr), args


def test_flash_mistakes_are_found_before_the_chip_is_touched(rig, tmp_path):
    r = rig()
    image = tmp_path / "app.bin"
    image.write_bytes(padded("1.1.0", 2048))
    target = ("--target", r.target_port)
    hexfile = tmp_path / "app.hex"
    hexfile.write_text(":00000001FF\n")
    notelf = tmp_path / "app.elf"
    notelf.write_bytes(padded("1.1.0"))
    huge = tmp_path / "huge.bin"
    with open(huge, "wb") as stream:
        stream.truncate(3 * 1024**3)  # 3 GB, sparse: refused by its size, never read
    cases = [
        (("flash", str(hexfile), *target, "--address", "0x08004000"), "--address applies to raw .bin images only"),
        (("flash", str(notelf), *target), "is named .elf but is not an ELF file"),
        (("flash", str(image), *target, "--enter", "boot0=2"), "--enter: bad sequence step 'boot0=2'"),
        (("flash", str(image), *target, "--reset", "dtr"), "a pseudo-terminal has no RTS/DTR lines"),
        (("flash", str(huge), *target), "3,221,225,472 bytes: more than any image"),
        (("sideload", str(huge), "--notecard", r.notecard_port), "3,221,225,472 bytes"),
        (("flash", str(image), *target, "--preserve", "0x09000000:0x09000400"), "outside the flash"),
    ]
    for args, needle in cases:
        started = time.monotonic()
        done = run_cli(*args)
        assert done.returncode == ExitCode.USAGE and needle in done.stderr, (args, done.stderr)
        assert time.monotonic() - started < 10
    assert r.chip.stats["erased_pages"] == 0 and r.chip.writes == 0 and r.card.requests == {}


def test_keygen_into_a_missing_directory_is_a_clear_error(tmp_path):
    done = run_cli("keygen", str(tmp_path / "nodir" / "k.pem"))
    assert done.returncode == ExitCode.USAGE and "E_KEY" in done.stderr and "cannot write key" in done.stderr


def test_a_signed_image_is_flashed_without_its_trailer_and_checked_when_a_key_is_given(rig, tmp_path):
    r = rig()
    keygen = run_cli("keygen", str(tmp_path / "k.pem"))
    public = keygen.stdout.split('public_key = "')[1].split('"')[0]
    other = run_cli("keygen", str(tmp_path / "other.pem")).stdout.split('public_key = "')[1].split('"')[0]
    image = tmp_path / "app.bin"
    image.write_bytes(padded("1.1.0", 4096))
    assert run_cli("sign", str(image), "--key", str(tmp_path / "k.pem")).returncode == 0
    refused = run_cli("flash", str(image), "--target", r.target_port, "--public-key", other)
    assert refused.returncode == ExitCode.SIGNATURE and r.chip.writes == 0, refused.stderr
    done = run_cli("flash", str(image), "--target", r.target_port, "--public-key", public, "--no-run")
    assert done.returncode == 0, done.stderr
    flash = r.flash_file.read_bytes()
    assert flash.startswith(padded("1.1.0", 4096)) and flash[4096:4096 + 76] == b"\xff" * 76  # no trailer
