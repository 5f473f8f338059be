"""The command line over pseudo-terminals: what a user or a rig actually runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from notedfu.errors import ExitCode
from notedfu.sim.cardport import CardPort
from notedfu.sim.pty import PtyServer
from tests.conftest import run_cli


@pytest.fixture
def pty_card(sim):
    """A simulated card served on a pty in this process (so the test can look inside it)."""
    servers = []

    def make(**opts):
        card, _ = sim(**opts)
        server = PtyServer(CardPort(card, card.link)).start()
        servers.append(server)
        return card, server.path

    yield make
    for server in servers:
        server.stop()


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_sim_pty_and_fetch_in_two_processes_give_the_same_image(tmp_path, image):
    """The acceptance run: `notedfu sim notecard --pty` + `notedfu fetch` + cmp."""
    source = tmp_path / "fw.bin"
    source.write_bytes(image)
    server = subprocess.Popen([sys.executable, "-m", "notedfu", "sim", "notecard", "--pty", "--image", str(source),
                               "--latency", "0.005", "--per-kib", "0.001"], stdout=subprocess.PIPE, text=True)
    try:
        device = server.stdout.readline().strip()
        assert device.startswith("/dev/pts/")
        before = json.loads(run_cli("status", "--notecard", device, "--json").stdout)
        out = tmp_path / "out.bin"
        done = run_cli("fetch", "--notecard", device, "-o", str(out))
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == source.read_bytes()
        after = json.loads(run_cli("status", "--notecard", device, "--json").stdout)
        assert before["card"]["hub_mode"] == after["card"]["hub_mode"] == "periodic"
        assert after["staged"][0]["complete"] is True
        assert events(done.stdout)[-1]["status"] == "SUCCESS"  # not a TTY: JSON lines
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=10) == 0


def test_fetch_json_events_have_steps_progress_and_a_result(pty_card, tmp_path, image):
    card, device = pty_card(mode="continuous")
    done = run_cli("fetch", "--notecard", device, "--json")
    assert done.returncode == 0, done.stderr
    evs = events(done.stdout)
    steps = [e["step"] for e in evs if e["type"] == "step"]
    assert steps[:3] == ["check", "enter_dfu", "transfer"] and steps[-2:] == ["verify", "exit_dfu"]
    progress = [e for e in evs if e["type"] == "step" and e["step"] == "transfer" and e["bytes"]]
    assert progress[-1]["bytes"] == progress[-1]["total"] == len(image) and progress[-1]["percent"] == 100.0
    result = evs[-1]["result"]
    assert result["card_mode"] == "continuous" and result["binary"] is True
    assert card.hub_mode == "continuous"


def _kill_when(proc: subprocess.Popen, state: Path, fraction: float, length: int, sig: int) -> int:
    """Send ``sig`` once the journal shows ``fraction`` of the image verified; return verified bytes."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for path in (state / "staging").glob("*.json"):
            try:
                verified = json.loads(path.read_text())["verified"]
            except (ValueError, KeyError, OSError):
                continue
            if verified >= fraction * length:
                proc.send_signal(sig)
                proc.wait(timeout=20)
                return verified
        time.sleep(0.01)
    raise AssertionError("transfer never got there")


def test_fetch_killed_at_half_way_resumes_from_the_last_verified_chunk(pty_card, tmp_path, image):
    card, device = pty_card(mode="continuous", latency="0.02", per_kib="0.02")
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "notedfu", "fetch", "--notecard", device, "--chunk", "2048",
                             "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    verified = _kill_when(proc, state, 0.5, len(image), signal.SIGKILL)
    assert 0 < verified < len(image)
    assert card.hub_mode == "dfu"  # SIGKILL: nothing could hand it back
    out = tmp_path / "out.bin"
    done = run_cli("fetch", "--notecard", device, "--chunk", "2048", "-o", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == image
    assert events(done.stdout)[-1]["result"]["resumed_from"] >= verified
    assert card.bytes_served_more_than_once() <= 2048  # at most the one chunk in flight
    assert card.hub_mode == "continuous"  # the mode from before the crash, not "dfu"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_fetch_hands_the_card_back_and_keeps_the_staging(pty_card, tmp_path, image, sig):
    card, device = pty_card(mode="minimum", latency="0.02", per_kib="0.02")
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "notedfu", "fetch", "--notecard", device, "--chunk", "2048",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    verified = _kill_when(proc, state, 0.3, len(image), sig)
    assert proc.returncode == ExitCode.INTERRUPTED
    assert "E_INTERRUPTED" in proc.stderr.read()
    assert card.hub_mode == "minimum"
    assert not (state / "card-mode.json").exists()
    journal = json.loads(next((state / "staging").glob("*.json")).read_text())
    assert journal["verified"] >= verified


def test_status_repairs_a_card_left_in_dfu_mode_by_a_killed_agent(pty_card, tmp_path, image):
    card, device = pty_card(mode="continuous", latency="0.02", per_kib="0.02")
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "notedfu", "fetch", "--notecard", device, "--chunk", "2048",
                             "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, state, 0.2, len(image), signal.SIGKILL)
    assert card.hub_mode == "dfu"
    status = run_cli("status", "--notecard", device, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["card"]["repaired_mode"] == "continuous" and report["card"]["hub_mode"] == "continuous"
    assert card.hub_mode == "continuous"
    assert report["staged"][0]["complete"] is False and report["staged"][0]["verified"] > 0


def test_status_text_and_json(pty_card, image):
    card, device = pty_card()
    text = run_cli("status", "--notecard", device)
    assert text.returncode == 0
    assert "host DFU      ready — successfully downloaded" in text.stdout
    assert f"{len(image)} bytes" in text.stdout
    report = json.loads(run_cli("status", "--notecard", device, "--json").stdout)
    assert report["card"]["image"]["length"] == len(image) and report["card"]["dfu"]["mode"] == "ready"
    assert list(report) == ["source", "daemon", "card", "job", "last_job", "installed", "pending", "staged",
                            "agent_busy"] and report["source"] == "card"


def test_dfu_policy_commands(pty_card):
    card, device = pty_card()
    assert run_cli("dfu", "off", "--notecard", device).stdout.startswith("host firmware downloads off")
    assert card.dfu_on is False
    assert run_cli("dfu", "on", "--notecard", device).returncode == 0 and card.dfu_on is True
    rule = "usb:1;high:1;normal:0;low:0;dead:0"
    done = run_cli("dfu", "vvalue", rule, "--notecard", device, "--json")
    assert json.loads(done.stdout)["vvalue"] == rule and card.vvalue == rule
    missing = run_cli("dfu", "vvalue", "--notecard", device)
    assert missing.returncode == ExitCode.USAGE and "E_USAGE" in missing.stderr


def test_nothing_ready_exit_code(pty_card):
    card, device = pty_card(download="60")
    done = run_cli("fetch", "--notecard", device)
    assert done.returncode == ExitCode.NOT_READY
    assert done.stderr.strip().startswith("notedfu: E_DOWNLOADING:")
    failure = events(done.stdout)[-1]
    assert failure["status"] == "FAILURE" and failure["error"]["code"] == "E_DOWNLOADING"
    assert failure["source"] == "NOTECARD" and isinstance(failure["time"], float)  # like every event


def test_hostile_metadata_exit_code(pty_card, tmp_path):
    card, device = pty_card()
    card.meta["length"] = 10**12
    done = run_cli("fetch", "--notecard", device)
    assert done.returncode == ExitCode.BAD_RESPONSE and "E_IMAGE_META" in done.stderr


def test_link_errors_are_one_clear_line(tmp_path):
    missing = run_cli("status", "--notecard", str(tmp_path / "no-such-tty"))
    assert missing.returncode == ExitCode.LINK
    assert missing.stderr.count("\n") == 1 and "E_LINK_OPEN" in missing.stderr
    none = run_cli("status", env={"NOTEDFU_NOTECARD": ""})
    assert none.returncode == ExitCode.USAGE and "E_NO_NOTECARD" in none.stderr
    bad = run_cli("status", "--notecard", "i2c:/dev/i2c-1?address=zz")
    assert bad.returncode == ExitCode.USAGE and "E_BAD_SPEC" in bad.stderr
    sim_bad = run_cli("sim", "notecard", "--pty", "--image", str(tmp_path / "absent.bin"))
    assert sim_bad.returncode == ExitCode.USAGE and "E_SIM_CONFIG" in sim_bad.stderr


def test_second_fetch_on_the_same_state_dir_is_refused_as_busy(pty_card, tmp_path):
    from filelock import FileLock

    card, device = pty_card()
    state = tmp_path / "state"
    state.mkdir()
    with FileLock(str(state / "agent.lock")):
        done = run_cli("fetch", "--notecard", device)
    assert done.returncode == ExitCode.LINK and "E_BUSY" in done.stderr
    assert card.requests == {}  # refused before touching the card


def test_i2c_fetch_from_the_command_line(tmp_path, image):
    source = tmp_path / "fw.bin"
    source.write_bytes(image)
    out = tmp_path / "out.bin"
    done = run_cli("fetch", "--notecard", f"i2c:sim://notecard?image={source}&profile=i2c400k&latency=0.005",
                   "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == image


def test_python_dash_m_and_version():
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("notedfu ")
