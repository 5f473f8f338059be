"""The download engine over the real byte path: sim:// serial and the simulated I2C bus."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from notedfu.errors import BadResponseError, CardError, IntegrityError, LinkError, NotReadyError
from notedfu.sim.faults import FAULT_KINDS
from notedfu.sim import registry
from tests.conftest import fetch


def staged_files(state: Path) -> list[Path]:
    return sorted(p for p in state.rglob("*") if p.is_file())


@pytest.mark.parametrize("i2c", [False, True], ids=["serial", "i2c"])
def test_fetch_binary_mode_verified_and_mode_restored(sim, image, tmp_path, i2c):
    card, spec = sim(i2c=i2c, mode="continuous")
    result = fetch(spec, tmp_path / "state")
    assert result.path.read_bytes() == image
    assert result.binary is True and result.chunk_size == 8192 and result.chunks == 5
    assert card.hub_mode == "continuous" and result.card_mode == "continuous"
    assert card.requests["card.binary.get"] == 5
    assert card.bytes_served_more_than_once() == 0
    assert not (tmp_path / "state" / "card-mode.json").exists()


def test_base64_is_used_when_the_card_has_no_binary_mode(sim, image, tmp_path):
    card, spec = sim(binary="0")
    result = fetch(spec, tmp_path / "state")
    assert result.path.read_bytes() == image
    assert result.binary is False and "card.binary.get" not in card.requests


def test_chunk_size_steps_down_to_what_the_card_accepts(sim, image, tmp_path):
    card, spec = sim(max_chunk="3000")
    result = fetch(spec, tmp_path / "state")
    assert result.path.read_bytes() == image
    assert result.chunk_size == 2048  # 8192 → 4096 → 2048, the first size ≤ 3000


def test_dfu_mode_is_renewed_during_a_long_transfer(sim, image, tmp_path):
    # per_kib=0.05 s: ~2 s of card time, while DFU mode would lapse after 0.6 s without renewal
    card, spec = sim(dfu_timeout="0.6", per_kib="0.05", mode="minimum")
    result = fetch(spec, tmp_path / "state", renew_seconds=0.25, chunk=4096)
    assert result.path.read_bytes() == image
    assert card.requests["hub.set"] >= 4  # enter, renewals, restore
    assert card.hub_mode == "minimum"


def test_lapsed_dfu_mode_is_entered_again(sim, image, tmp_path):
    card, spec = sim(dfu_timeout="0.5", per_kib="0.05")
    result = fetch(spec, tmp_path / "state", renew_seconds=3600, chunk=4096)
    assert result.path.read_bytes() == image
    assert card.bytes_served_more_than_once() == 0
    assert card.hub_mode == "periodic"


def test_waits_for_dfu_mode_to_become_active(sim, image, tmp_path):
    card, spec = sim(ready_delay="0.3")
    assert fetch(spec, tmp_path / "state").path.read_bytes() == image
    assert card.requests["dfu.get"] > 5 + 1  # several length:0 probes before the data


def test_dfu_mode_that_never_becomes_active_is_a_clean_error(sim, tmp_path):
    card, spec = sim(ready_delay="100", mode="continuous")
    with pytest.raises(NotReadyError) as info:
        fetch(spec, tmp_path / "state", ready_timeout=0.3)
    assert info.value.code == "E_DFU_NOT_READY"
    assert card.hub_mode == "continuous"


@pytest.mark.parametrize("i2c", [False, True], ids=["serial", "i2c"])
@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
def test_every_single_fault_is_recovered(sim, image, tmp_path, kind, i2c):
    card, spec = sim(i2c=i2c, fault=f"{kind}@2", mode="continuous")
    result = fetch(spec, tmp_path / "state", timeout=1.5)
    assert result.path.read_bytes() == image
    assert card.config.faults[0].fired == 1
    assert card.hub_mode == "continuous"
    assert card.bytes_served_more_than_once() <= 8192


@pytest.mark.parametrize("kind,error,codes", [
    ("md5", IntegrityError, {"E_CHUNK_MD5"}),
    ("truncate", IntegrityError, {"E_CHUNK_LENGTH", "E_CHUNK_MD5"}),
    # bad base64 is caught by the decoder; bad COBS may decode to wrong bytes, caught by the md5
    ("badb64", IntegrityError, {"E_CHUNK_ENCODING", "E_CHUNK_MD5"}),
    ("corrupt", LinkError, {"E_NOTECARD_IO"}),
    ("io", LinkError, {"E_NOTECARD_IO"}),
])
@pytest.mark.parametrize("binary", ["1", "0"], ids=["binary", "base64"])
def test_persistent_faults_end_in_a_clean_error_with_the_card_handed_back(sim, tmp_path, kind, error, codes,
                                                                          binary):
    card, spec = sim(fault=f"{kind}@3+", mode="continuous", binary=binary)
    state = tmp_path / "state"
    with pytest.raises(error) as info:
        fetch(spec, state, retries=1, timeout=1.0)
    assert info.value.code in codes
    assert card.hub_mode == "continuous"
    assert not (state / "card-mode.json").exists()
    journal = json.loads(next((state / "staging").glob("*.json")).read_text())
    # two good chunks kept for next time: 4096 bytes each in base64, 8192 in binary (a probe the card took)
    assert journal["verified"] == 2 * (8192 if binary == "1" else 4096) and not journal["complete"]


def test_card_restarting_mid_transfer_again_and_again_is_a_clean_error(sim, tmp_path):
    card, spec = sim(fault="restart@2+", mode="continuous")
    with pytest.raises((LinkError, CardError)):
        fetch(spec, tmp_path / "state", retries=1, timeout=0.5)
    assert card.hub_mode == "continuous"


def test_nothing_to_fetch(sim, tmp_path):
    card, spec = sim(download="30")
    with pytest.raises(NotReadyError) as info:
        fetch(spec, tmp_path / "state")
    assert info.value.code == "E_DOWNLOADING"
    card.image = None
    card.dfu_state = "idle"
    with pytest.raises(NotReadyError) as info:
        fetch(spec, tmp_path / "state")
    assert info.value.code == "E_NO_IMAGE"
    assert card.hub_mode == "periodic"


@pytest.mark.parametrize("field,value", [
    ("length", 10**12), ("length", -5), ("length", "40000"), ("length", True),
    ("md5", "../../../etc/passwd"), ("md5", 42), ("crc32", None), ("crc32", 2**40),
])
def test_hostile_metadata_is_refused_before_dfu_mode(sim, tmp_path, field, value):
    card, spec = sim(mode="continuous")
    card.meta[field] = value
    state = tmp_path / "state"
    with pytest.raises(BadResponseError) as info:
        fetch(spec, state)
    assert info.value.code == "E_IMAGE_META"
    assert card.hub_mode == "continuous" and "hub.set" not in card.requests
    assert not list((state / "staging").glob("*"))


def test_hostile_names_never_become_paths(sim, image, tmp_path):
    card, spec = sim()
    evil = tmp_path / "evil"
    card.meta["name"] = f"../../../../{evil}"
    card.meta["source"] = str(evil) + "\x1b[31m"
    state = tmp_path / "state"
    result = fetch(spec, state)
    assert result.path.read_bytes() == image
    assert not evil.exists()
    md5 = hashlib.md5(image).hexdigest()
    assert [p.name for p in staged_files(state / "staging")] == [f"{md5}.bin", f"{md5}.json"]
    assert "\x1b" not in result.image.source


def test_length_larger_than_the_image_is_a_clean_card_error(sim, image, tmp_path):
    card, spec = sim(mode="continuous")
    card.meta["length"] = len(image) + 100
    with pytest.raises(CardError):
        fetch(spec, tmp_path / "state")
    assert card.hub_mode == "continuous"


def test_whole_image_mismatch_discards_the_staging_and_hands_the_card_back(sim, tmp_path):
    card, spec = sim(mode="continuous")
    card.meta["crc32"] = (card.meta["crc32"] + 1) % 2**32  # every chunk fine, the whole not
    state = tmp_path / "state"
    with pytest.raises(IntegrityError) as info:
        fetch(spec, state)
    assert info.value.code == "E_IMAGE_CRC32"
    assert card.hub_mode == "continuous"
    assert not list((state / "staging").glob("*"))


def test_a_staged_image_is_not_fetched_again(sim, image, tmp_path):
    card, spec = sim()
    fetch(spec, tmp_path / "state")
    again = fetch(spec, tmp_path / "state")
    assert again.already_staged and again.path.read_bytes() == image
    assert card.data_requests == 5


def test_resume_continues_from_the_journal(sim, image, tmp_path):
    card, spec = sim(fault="md5@3+")
    state = tmp_path / "state"
    with pytest.raises(IntegrityError):
        fetch(spec, state, retries=0)
    card.config.faults.clear()
    result = fetch(spec, state)
    assert result.resumed_from == 2 * 8192
    assert result.path.read_bytes() == image
    assert card.bytes_served_more_than_once() == 8192  # only the chunk that failed


def test_a_card_left_in_dfu_mode_by_a_crash_is_handed_back(sim, image, tmp_path):
    from notedfu.notecard.dfu import Downloader
    from notedfu.notecard.link import open_notecard
    from notedfu.notecard.staging import Staging

    card, spec = sim(mode="continuous")
    staging = Staging(tmp_path / "state")
    staging.save_card_mode("continuous")  # what a crashed agent leaves behind
    card.hub_mode, card.mode_before_dfu = "dfu", "continuous"
    restored = Downloader(open_notecard(spec, timeout=2), staging).mode.repair()
    assert restored == "continuous" and card.hub_mode == "continuous"
    assert staging.saved_card_mode() is None


def test_spec_name_resolution_shares_one_card(sim):
    card, spec = sim()
    assert registry.lookup("notecard", spec.split("name=")[1]) is card
