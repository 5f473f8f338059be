"""The STM32 side over the real byte path: frames, the emulated bootloader, the flasher."""

from __future__ import annotations

import itertools
import random
import struct

import pytest
import serial

from notedfu.sim import registry
from notedfu.errors import TargetError
from notedfu.protocol.an3155 import (ACK, NACK, address_frame, command_frame, count_frame, data_frame, erase_frame,
                                     extended_erase_frame, stm32_crc)
from notedfu.protocol.chips import CHIPS, FAMILIES, chip_for
from notedfu.target.an3155 import Bootloader
from notedfu.target.plan import FlashOptions, plan_flash
from notedfu.target.image import ImageFileError, Segment, load_image
from notedfu.target.driver import TargetOptions
from notedfu.target.rom import RomBootloaderDriver

BASE = 0x08000000
_names = itertools.count()


def app_image(size: int, seed: int = 5, holes: bool = False) -> bytes:
    """A bootable-looking image: SP in RAM, Thumb reset vector in flash, then data."""
    body = bytearray(random.Random(seed).randbytes(size - 8))
    if holes:  # large 0xFF runs, as a half-empty image has
        for start in range(2048, len(body), 4096):
            body[start:start + 2048] = b"\xff" * len(body[start:start + 2048])
    return struct.pack("<II", 0x20002000, BASE + 0x101) + bytes(body)


@pytest.fixture
def chip_url():
    made = []

    def make(query: str = "") -> tuple[str, str]:
        name = f"chip{next(_names)}"
        made.append(name)
        return f"sim://stm32?name={name}&time_scale=0.05&{query}", name

    yield make
    for name in made:
        registry.forget("stm32", name)


def session(url: str, **options) -> RomBootloaderDriver:
    target = RomBootloaderDriver(url, TargetOptions(**options))
    target.open()
    target.bootloader.timeouts.ack = 0.3
    target.connect()
    target.bootloader.timeouts.ack = 0.3
    return target


# ------------------------------------------------------------------ frames
def test_frames_byte_by_byte():
    assert command_frame(0x11) == bytes.fromhex("11ee")
    assert address_frame(0x08000000) == bytes.fromhex("0800000008")
    assert count_frame(256) == bytes.fromhex("ff00")
    assert erase_frame([0, 1, 2, 3]) == bytes.fromhex("030001020303")
    assert extended_erase_frame([0, 1, 2, 3]) == bytes.fromhex("0003000000010002000303")
    assert extended_erase_frame(special=0xFFFF) == bytes.fromhex("ffff00")
    assert extended_erase_frame(special=0xFFFE) == bytes.fromhex("fffe01")
    assert data_frame(b"\x01\x02\x03\x04") == bytes.fromhex("030102030407")
    with pytest.raises(ValueError):
        data_frame(b"\x00" * 257)


def test_stm32_crc_matches_the_hardware_unit():
    assert stm32_crc(b"\xff" * 4) == 0x00000000
    assert stm32_crc(b"\xff" * 1024) == 0xD000A3E2


def test_chip_table_covers_the_families_with_sane_geometry():
    assert {chip.family.name for chip in CHIPS.values()} >= {"F0", "F1", "F3", "F4", "F7", "G0", "G4", "L0", "L4", "H7"}
    for chip in CHIPS.values():
        pages = chip.pages()
        assert pages[0][0] == BASE
        assert sum(size for _, size in pages) == chip.flash_size
    f4 = chip_for(0x413).pages()
    assert [size // 1024 for _, size in f4[:6]] == [16, 16, 16, 16, 64, 128]
    assert FAMILIES["G0"].write_granule == 8


# ------------------------------------------------------------------ emulator, raw bytes
def raw_port(url: str) -> serial.SerialBase:
    return serial.serial_for_url(url, timeout=0.3)


def test_emulator_sync_get_and_bad_frames(chip_url):
    url, _ = chip_url("bootloader=v3crc")
    port = raw_port(url)
    port.write(b"\x7f")
    assert port.read(1) == bytes([ACK])
    port.write(b"\x7f")
    assert port.read(1) == bytes([NACK])  # already synced
    port.write(bytes.fromhex("00ff"))
    reply = port.read(16)
    assert reply[:3] == bytes([ACK, 12, 0x31]) and reply[-1] == ACK and 0xA1 in reply
    port.write(bytes.fromhex("0000"))  # bad complement
    assert port.read(1) == bytes([NACK])
    port.write(bytes.fromhex("11ee") + bytes.fromhex("0800000009"))  # bad address checksum
    assert port.read(2) == bytes([ACK, NACK])
    port.write(bytes.fromhex("02fd"))
    assert port.read(5) == bytes([ACK, 1, 0x04, 0x20, ACK])


def test_emulator_flash_bits_only_clear_without_erase(chip_url):
    url, name = chip_url()
    bl = Bootloader(raw_port(url))
    bl.sync()
    bl.write_memory(BASE, b"\x0f\x0f\x0f\x0f")
    bl.write_memory(BASE, b"\xf0\xff\xf0\xff")
    assert bl.read_memory(BASE, 4) == b"\x00\x0f\x00\x0f"
    bl.erase([0], extended=False)
    assert bl.read_memory(BASE, 4) == b"\xff" * 4
    with pytest.raises(TargetError) as info:
        bl.write_memory(BASE + 128 * 1024, b"\x00" * 4)  # beyond flash
    assert info.value.code == "E_TARGET_NACK"


def test_emulator_readout_protection_answers_only_get_commands(chip_url):
    url, _ = chip_url("rdp=1")
    bl = Bootloader(raw_port(url))
    bl.sync()
    assert bl.get_id() == 0x420 and bl.get()[0] == 0x22
    with pytest.raises(TargetError):
        bl.read_memory(BASE, 16)


def test_emulator_extended_and_legacy_erase_variants(chip_url):
    url, name = chip_url("bootloader=v3")
    bl = Bootloader(raw_port(url))
    bl.sync()
    bl.write_memory(BASE + 1024 * 5, b"\x00" * 4)
    with pytest.raises(TargetError):
        bl.erase([5], extended=False)  # 0x43 is not in a 3.1 bootloader's list
    bl.erase([5], extended=True)
    assert bl.read_memory(BASE + 1024 * 5, 4) == b"\xff" * 4
    bl.write_memory(BASE, b"\x00" * 4)
    bl.mass_erase(extended=True)
    assert registry.lookup("stm32", name).flash == bytearray(b"\xff" * 128 * 1024)


@pytest.mark.parametrize("left_behind", ["44bb", "44bb00", "44bbff", "31ce", "31ce08000000"])
def test_sync_completes_a_frame_a_dead_host_left_half_sent_without_harm(chip_url, left_behind):
    url, name = chip_url("bootloader=v3crc&baud=1000000")  # fast: an erase count may want 64 KiB of filler
    bl = Bootloader(raw_port(url))
    bl.sync()
    bl.write_memory(BASE, b"\x00" * 4)
    chip = registry.lookup("stm32", name)
    erased = chip.stats["erased_pages"]
    port = serial.serial_for_url(url, timeout=0.3, baudrate=1000000)
    port.write(bytes.fromhex(left_behind))  # a host dies mid-command: the bootloader waits for the rest
    fresh = Bootloader(port)
    fresh.sync()  # the 0x7F becomes part of the frame; the filler completes it
    assert fresh.get_id() == 0x420
    assert chip.stats["erased_pages"] == erased and bl.read_memory(BASE, 4) == b"\x00" * 4


def test_go_starts_the_application_and_the_bootloader_falls_silent(chip_url):
    url, name = chip_url()
    bl = Bootloader(raw_port(url))
    bl.sync()
    bl.go(BASE)
    chip = registry.lookup("stm32", name)
    assert chip.running_app and chip.app_starts == 1
    with pytest.raises(TargetError):
        bl.get_id()


# ------------------------------------------------------------------ plan
def test_plan_covers_only_the_image_and_skips_empty_blocks():
    chip = CHIPS[0x420]
    image = app_image(10 * 1024, holes=True)
    plan = plan_flash([Segment(BASE, image)], chip, chip.flash_size, FlashOptions())
    assert [p.index for p in plan.pages] == list(range(10))
    assert plan.first is plan.pages[0]
    assert plan.write_bytes < len(image) * 0.8


@pytest.mark.parametrize("segment,options,code", [
    (Segment(BASE, app_image(129 * 1024)), FlashOptions(), "E_IMAGE_TOO_LARGE"),
    (Segment(BASE + 0x1000, app_image(4096)), FlashOptions(), "E_IMAGE_NOT_AT_BASE"),
    (Segment(BASE, b"\x00" * 4096), FlashOptions(), "E_IMAGE_NOT_BOOTABLE"),
    (Segment(BASE, app_image(8192)), FlashOptions(preserve=[(BASE + 4096, BASE + 6144)]),
     "E_IMAGE_OVERLAPS_PRESERVED"),
])
def test_plan_refuses_bad_images(segment, options, code):
    chip = CHIPS[0x420]
    with pytest.raises(TargetError) as info:
        plan_flash([segment], chip, chip.flash_size, options)
    assert info.value.code == code


# ------------------------------------------------------------------ flasher
@pytest.mark.parametrize("variant,method", [("v2", "read"), ("v3", "read"), ("v3crc", "crc")])
def test_flash_writes_verifies_and_starts_with_the_vector_page_last(chip_url, variant, method):
    url, name = chip_url(f"bootloader={variant}")
    image = app_image(20 * 1024 + 100)
    target = session(url)
    report = target.flash([Segment(BASE, image)], FlashOptions())
    chip = registry.lookup("stm32", name)
    assert bytes(chip.flash[:len(image)]) == image
    assert chip.flash[len(image):] == b"\xff" * (len(chip.flash) - len(image))
    assert report.verify_method == method and report.started and chip.app_starts == 1
    first_page_writes = [i for i, a in enumerate(chip.write_log) if a < BASE + 1024]
    assert min(first_page_writes) > max(i for i, a in enumerate(chip.write_log) if a >= BASE + 1024)
    assert chip.stats["erased_pages"] == 21  # only the pages the image covers


def test_half_empty_image_skips_the_empty_blocks(chip_url):
    url, name = chip_url("bootloader=v3crc")
    image = app_image(32 * 1024, holes=True)
    report = session(url).flash([Segment(BASE, image)], FlashOptions())
    chip = registry.lookup("stm32", name)
    assert bytes(chip.flash[:len(image)]) == image
    empty = sum(1 for at in range(0, len(image), 256) if image[at:at + 256] == b"\xff" * 256)
    assert empty >= 48
    # Whole empty pages match the erased chip and are not touched at all; empty blocks inside the pages
    # that are written are skipped.
    assert report.pages_unchanged >= 1 and report.blocks_skipped + 4 * report.pages_unchanged == empty
    assert chip.stats["written_blocks"] == 128 - empty + 1  # + 1: the vector table's 8 bytes go alone, last


def test_comparing_with_an_erased_chip_reads_a_few_bytes_a_page(chip_url):
    """A page's first bytes decide it when they differ: on an empty F1 (no CRC command) the compare costs 8
    bytes a page instead of a read-back; then every written page is read back whole to verify it."""
    url, name = chip_url("bootloader=v2")
    image = app_image(16 * 1024)
    target = session(url)
    chip = registry.lookup("stm32", name)
    before = chip.stats["read_bytes"]
    report = target.flash([Segment(BASE, image)], FlashOptions(run=False))
    assert report.pages_written == 16 and bytes(chip.flash[:len(image)]) == image
    assert chip.stats["read_bytes"] - before == 16 * 8 + 8 + len(image)  # compare, page 0 erased?, verify


def test_what_a_session_read_is_not_read_again_until_something_may_have_changed_it(chip_url):
    """The rollback check (holds) reads the chip back; the flash plan's compare in the same session reuses
    those reads instead of a second read-back (an F1 has no CRC command). A write, an erase or a new sync
    forgets them: verification always reads the chip."""
    url, name = chip_url("bootloader=v2")
    old = app_image(16 * 1024)
    session(url).flash([Segment(BASE, old)], FlashOptions(run=False))
    chip = registry.lookup("stm32", name)
    target = session(url)
    read_before = chip.stats["read_bytes"]
    assert target.holds([Segment(BASE, old)])
    assert chip.stats["read_bytes"] - read_before == len(old)  # every byte read once
    new = bytearray(old)
    new[9 * 1024] ^= 0xFF
    report = target.flash([Segment(BASE, bytes(new))], FlashOptions(run=False))
    assert (report.pages_written, report.pages_unchanged) == (2, 14) and bytes(chip.flash[:len(new)]) == bytes(new)
    # The compare fetched nothing; the erased first page's vector table (8 bytes) and the two written pages
    # were read back to check them.
    assert chip.stats["read_bytes"] - read_before == len(old) + 8 + 2 * 1024
    # Known: each page's first 8 bytes (the first look), then the 15 pages that passed it, read whole.
    assert target.bootloader.stats.known_reads == 16 * 8 + 15 * 1024
    target.connect()  # a new sync: a new session (connect reads the 2-byte flash-size register again too)
    assert target.holds([Segment(BASE, bytes(new))])
    assert chip.stats["read_bytes"] - read_before == 2 + 2 * len(old) + 8 + 2 * 1024


@pytest.mark.parametrize("bootloader", ["v2", "v3crc"])  # the F100's real one (read-back), the CRC what-if
def test_a_small_change_writes_the_changed_page_and_the_vector_page_and_skips_the_rest(chip_url, bootloader):
    url, name = chip_url(f"bootloader={bootloader}")
    image = bytearray(app_image(20 * 1024))
    first = session(url).flash([Segment(BASE, bytes(image))], FlashOptions(run=False))
    assert (first.pages_written, first.pages_unchanged, first.pages_verified) == (20, 0, 20)
    again = session(url).flash([Segment(BASE, bytes(image))], FlashOptions(run=False))
    assert again.unchanged and (again.pages_written, again.pages_unchanged, again.pages_verified) == (0, 20, 0)
    image[12 * 1024 + 5] ^= 0xFF  # one byte in page 12
    chip = registry.lookup("stm32", name)
    erased = chip.stats["erased_pages"]
    fixed = session(url).flash([Segment(BASE, bytes(image))], FlashOptions(run=False))
    # Page 12, and page 0 erased first and written last: no half-new image can boot meanwhile.
    assert (fixed.pages_written, fixed.pages_unchanged, fixed.pages_verified) == (2, 18, 2)
    assert chip.stats["erased_pages"] - erased == 2 and bytes(chip.flash[:len(image)]) == bytes(image)
    if bootloader == "v3crc":  # compared and verified by CRC: no page was read back
        assert chip.stats["read_bytes"] <= 2 * 3  # the flash-size register, once a session


def test_preserved_region_is_never_erased(chip_url):
    url, name = chip_url()
    target = session(url)
    chip = registry.lookup("stm32", name)
    chip.flash[126 * 1024:127 * 1024] = b"settings" * 128
    target.flash([Segment(BASE, app_image(4096))], FlashOptions(preserve=[(BASE + 126 * 1024, BASE + 127 * 1024)]))
    assert chip.flash[126 * 1024:127 * 1024] == b"settings" * 128


@pytest.mark.parametrize("faults", ["nack@3", "drop@4", "reset@5", "power@6", "nack@2,power@9,drop@15"])
def test_faults_mid_flash_are_recovered(chip_url, faults):
    url, name = chip_url("bootloader=v3crc&" + "&".join(f"fault={f}" for f in faults.split(",")))
    image = app_image(12 * 1024)
    report = session(url).flash([Segment(BASE, image)], FlashOptions())
    chip = registry.lookup("stm32", name)
    assert bytes(chip.flash[:len(image)]) == image
    assert report.repaired_pages >= 1 and all(f.fired == 1 for f in chip.faults)


@pytest.mark.parametrize("query,code", [
    ("fault=nack@3%2B", "E_TARGET_VERIFY"),  # every write from the third on is refused
    ("fault=wprot@4", "E_TARGET_VERIFY"),  # a write-protected page ACKs but keeps its bytes
    ("fault=power@4%2B", "E_TARGET_VERIFY"),
])
@pytest.mark.parametrize("variant", ["v2", "v3crc"])
def test_persistent_faults_leave_the_first_page_erased(chip_url, query, code, variant):
    url, name = chip_url(f"bootloader={variant}&{query}")
    target = session(url)
    chip = registry.lookup("stm32", name)
    chip.flash[:1024] = app_image(1024, seed=1)  # an old, bootable image
    with pytest.raises(TargetError) as info:
        target.flash([Segment(BASE, app_image(8 * 1024))], FlashOptions(retries=1))
    assert info.value.code == code
    assert chip.flash[:1024] == b"\xff" * 1024  # nothing that boots
    assert chip.app_starts == 0


def test_write_protected_first_page_stops_before_anything_changes(chip_url):
    url, name = chip_url("fault=wprot@0&bootloader=v3crc")
    target = session(url)
    chip = registry.lookup("stm32", name)
    old = app_image(8 * 1024, seed=9)
    chip.flash[:len(old)] = old
    with pytest.raises(TargetError) as info:
        target.flash([Segment(BASE, app_image(8 * 1024))], FlashOptions())
    assert info.value.code == "E_TARGET_PROTECTED"
    assert bytes(chip.flash[:len(old)]) == old  # the old image is intact
    assert chip.stats["written_blocks"] == 0


def test_readout_protected_chip_is_refused_unless_unprotect_is_asked(chip_url):
    url, name = chip_url("rdp=1")
    target = session(url)
    assert target.protected
    with pytest.raises(TargetError) as info:
        target.flash([Segment(BASE, app_image(2048))], FlashOptions())
    assert info.value.code == "E_TARGET_PROTECTED"
    target.unprotect(readout=True, write=False)
    target.flash([Segment(BASE, app_image(2048))], FlashOptions())
    assert not registry.lookup("stm32", name).readout_protected


def test_rts_dtr_line_control_enters_the_bootloader_and_starts_the_app(chip_url):
    url, name = chip_url("boot0=rts&reset=dtr")
    port = serial.serial_for_url(url)  # create the chip and get it running its application
    chip = registry.lookup("stm32", name)
    chip.set_lines(boot0=False, reset=True)
    chip.set_lines(reset=False)
    assert chip.running_app
    port.close()
    target = session(url, boot0="rts", reset="dtr")
    assert not chip.running_app and chip.boot0
    target.flash([Segment(BASE, app_image(2048))], FlashOptions())
    assert chip.running_app and not chip.boot0 and chip.app_starts == 2


# ------------------------------------------------------------------ images
def test_intel_hex_and_elf_images(tmp_path):
    from intelhex import IntelHex

    image = app_image(3000)
    ihex = IntelHex()
    ihex.frombytes(image, offset=BASE)
    ihex.write_hex_file(str(tmp_path / "fw.hex"))
    assert load_image(tmp_path / "fw.hex") == [Segment(BASE, image)]
    (tmp_path / "fw.elf").write_bytes(minimal_elf(BASE, image))
    assert load_image(tmp_path / "fw.elf") == [Segment(BASE, image)]
    (tmp_path / "bad.hex").write_text(":zz\n")
    with pytest.raises(ImageFileError):
        load_image(tmp_path / "bad.hex")
    with pytest.raises(ImageFileError):
        load_image(tmp_path / "missing.bin", BASE)


def minimal_elf(address: int, data: bytes) -> bytes:
    """A 32-bit little-endian ARM ELF with one PT_LOAD segment (what a linker would emit)."""
    header = struct.pack("<4sBBBBB7sHHIIIIIHHHHHH", b"\x7fELF", 1, 1, 1, 0, 0, b"\0" * 7, 2, 40, 1,
                         address + 0x101, 52, 0, 0x05000000, 52, 32, 1, 40, 0, 0)
    program = struct.pack("<IIIIIIII", 1, 84, address, address, len(data), len(data), 5, 4)
    return header + program + data


@pytest.mark.parametrize("pid, family_seconds", [(0x420, 0.020), (0x413, 8.0)])
def test_a_mass_erase_takes_the_familys_time_not_the_sum_of_its_pages(pid, family_seconds):
    """An F1 erases all of its flash in about one page's time (tME 20 ms); an F4 takes seconds (8 s typical):
    the emulator charged the sum of every page (2.56 s on the F100), flattering every client that erases
    page by page against stm32flash and stm32loader, which mass-erase."""
    from notedfu.sim.stm32 import Stm32Sim

    chip = Stm32Sim(pid, "v3")  # extended erase: FF FF 00 is the global mass erase
    now = 100.0
    chip.feed(b"\x7f", now)
    now += 1.0
    assert chip.read(1, now) == bytes([ACK])
    chip.feed(command_frame(0x44), now)
    now += 1.0
    assert chip.read(1, now) == bytes([ACK])
    chip.feed(bytes.fromhex("ffff00"), now)
    wait = chip.time_until(1, now)
    pages = sum(chip.chip.family.erase_seconds(size) for _, size in chip.chip.pages())
    assert family_seconds <= wait < family_seconds * 1.05 and wait < pages
    chip.close()
