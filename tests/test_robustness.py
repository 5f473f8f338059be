"""State that cannot be trusted, a disk that fills, files that change under the agent, a log that grows:
nothing verified is lost, nothing wrong reaches the card's report or the target, and the run goes on."""

from __future__ import annotations

import hashlib
import json
import resource
import signal
import subprocess
import sys

from conftest import run_cli
from notedfu.errors import ExitCode
from notedfu.events import Events, file_sink
from notedfu.update.job import JobStore
from notedfu.sim.rig import demo_image
from rig import events, padded


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fetch_args(r, state, *extra: str) -> list[str]:
    return [sys.executable, "-m", "notedfu", "fetch", "--notecard", r.notecard_port, "--state-dir", str(state),
            "--json", *extra]


def kill_at(argv: list[str], predicate, sig: int = signal.SIGKILL) -> None:
    """Run ``argv`` and send ``sig`` at the first event ``predicate`` accepts."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("{") and predicate(json.loads(line)):
            proc.send_signal(sig)
            break
    proc.wait(timeout=60)


def test_a_journal_with_wrong_types_is_moved_aside_and_the_download_starts_clean(rig, tmp_path):
    r = rig()
    staging = tmp_path / "state" / "staging"
    staging.mkdir(parents=True)
    journal = staging / f"{md5(r.offered)}.json"
    journal.write_text(json.dumps({"md5": md5(r.offered), "length": "all of it", "verified": [1]}))
    done = subprocess.run(fetch_args(r, tmp_path / "state"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "moved aside" in done.stdout and (staging / f"{journal.name}.bad").exists()
    assert (staging / f"{md5(r.offered)}.bin").read_bytes() == r.offered


def test_a_job_file_with_wrong_types_is_moved_aside_and_the_update_goes_on(rig):
    r = rig()
    jobs = r.state / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "20260101-000000-bad.json").write_text(json.dumps({"id": 5, "md5": None, "stages": "many"}))
    (jobs / "current").write_text(json.dumps({"id": "20260101-000000-bad"}))
    done = r.update()
    assert done.returncode == 0, done.stderr
    assert "moved aside" in done.stdout and (jobs / "20260101-000000-bad.json.bad").exists()
    assert JobStore(r.state).latest().state == "success" and r.card.hub_mode == "continuous"


def test_a_full_disk_is_a_transient_staging_error_and_the_next_run_resumes(rig, tmp_path):
    r = rig(offered=padded("1.1.0", 64 * 1024))

    def small_disk() -> None:  # every file this process writes stops at 20,000 bytes: EFBIG, as a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    full = subprocess.run(fetch_args(r, tmp_path / "state", "--chunk", "4096"), capture_output=True, text=True,
                          timeout=60, preexec_fn=small_disk)
    assert full.returncode != 0 and "E_STAGING" in full.stderr and "make room" in full.stderr, full.stderr
    assert r.card.hub_mode == "continuous" and r.card.image == r.offered  # handed back, the image kept
    journal = json.loads((tmp_path / "state" / "staging" / f"{md5(r.offered)}.json").read_text())
    assert 0 < journal["verified"] <= 20_000  # never more than what is on disk
    again = subprocess.run(fetch_args(r, tmp_path / "state"), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert events(again.stdout)[-1]["result"]["resumed_from"] == journal["verified"]
    assert (tmp_path / "state" / "staging" / f"{md5(r.offered)}.bin").read_bytes() == r.offered


def test_a_bit_flipped_on_disk_is_caught_by_the_whole_image_check_and_read_once_more(rig, tmp_path):
    r = rig(offered=padded("1.1.0", 64 * 1024), latency="0.02")
    state = tmp_path / "state"
    kill_at(fetch_args(r, state, "--chunk", "4096"),
            lambda e: e["type"] == "step" and e["step"] == "transfer" and (e["percent"] or 0) >= 50)
    part = state / "staging" / f"{md5(r.offered)}.part"
    data = bytearray(part.read_bytes())
    data[1000] ^= 0x10  # inside what the journal says was verified: every chunk matched its md5 when it came
    part.write_bytes(bytes(data))
    done = subprocess.run(fetch_args(r, state), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "reading the whole image from the Notecard again" in done.stdout
    assert (state / "staging" / f"{md5(r.offered)}.bin").read_bytes() == r.offered


def test_a_staged_image_changed_on_disk_never_reaches_the_target_and_is_read_again(rig):
    r = rig()
    kill_at(r.args(), lambda e: e["type"] == "step" and e["step"] == "exit_dfu")  # staged, verified, not flashed
    staged = r.state / "staging" / f"{md5(r.offered)}.bin"
    data = bytearray(staged.read_bytes())
    data[100] ^= 0xFF
    staged.write_bytes(bytes(data))
    writes = r.chip.writes
    changed = r.update()
    assert changed.returncode == ExitCode.TRY_LATER and "changed on disk" in changed.stderr, changed.stderr
    assert r.chip.writes == writes and not r.card.reports  # the target untouched, Notehub told nothing
    done = r.update()
    assert done.returncode == 0, done.stderr
    assert r.flash_file.read_bytes().startswith(r.offered)


def test_staging_keeps_only_what_the_chip_runs_after_an_update(rig):
    r = rig(lines=True)  # the reset line takes the board back to its bootloader for the second update
    assert r.update().returncode == 0
    newer = demo_image("1.2.0-broken")  # a newer version (its banner does not matter: no console here)
    r.card.stage(newer, "demo-1.2.0.bin")
    assert r.update().returncode == 0
    left = {p.name.split(".")[0] for p in (r.state / "staging").iterdir()}
    assert left == {md5(newer)}  # 1.1.0 is gone: 1.2.0 runs, and is the next last-known-good


def test_the_events_file_is_rotated_and_keeps_one_old_file(tmp_path):
    path = tmp_path / "events.jsonl"
    events_out = Events(file_sink(str(path), max_bytes=2000))
    for n in range(100):
        events_out.message(f"event {n}")
    old = tmp_path / "events.jsonl.1"
    assert old.exists() and path.stat().st_size <= 2000 + 200 and old.stat().st_size <= 2000 + 200
    lines = [json.loads(line)["text"] for line in (old.read_text() + path.read_text()).splitlines()]
    assert lines[-1] == "event 99" and lines == [f"event {n}" for n in range(100 - len(lines), 100)]


def test_status_without_a_daemon_names_the_socket_and_has_the_daemons_schema(rig, tmp_path):
    r = rig()
    socket_path = tmp_path / "no-daemon.sock"
    done = run_cli("status", "--socket", str(socket_path), "--notecard", r.notecard_port, "--json",
                   "--state-dir", str(r.state))
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert set(status) >= {"source", "daemon", "card", "job", "last_job", "installed", "pending", "staged"}
    assert str(socket_path) in json.dumps(status["daemon"])
    text = run_cli("status", "--socket", str(socket_path), "--notecard", r.notecard_port, "--state-dir", str(r.state))
    assert text.returncode == 0 and str(socket_path) in text.stdout, text.stdout


def test_the_demo_run_twice_in_one_workdir_updates_the_board_both_times(tmp_path):
    for run in (1, 2):
        done = run_cli("demo", "--workdir", str(tmp_path / "wd"), "--no-qemu", "--json", timeout=180)
        assert done.returncode == 0, (run, done.stderr)
        summary = events(done.stdout)[-1]
        assert summary["type"] == "summary" and summary["outcome"] == "success", (run, summary)
        assert "1.1.0" in json.dumps(summary["target"]), (run, summary)
