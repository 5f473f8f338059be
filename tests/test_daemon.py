"""`notedfu run`: the daemon over its control socket, with systemd's notify socket, signals and
the client commands (status, install, approve, cancel, events) — all against the simulated rig."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import notedfu

from conftest import run_cli
from notedfu.errors import ExitCode, NotedfuError
from notedfu.update.control import MAX_REQUEST, ControlClient
from notedfu.update.job import JobStore
from rig import padded, toml


class Daemon:
    """``notedfu run`` in a subprocess, with a notify socket standing in for systemd."""

    def __init__(self, r, *extra: str, config: dict | None = None) -> None:
        self.rig = r
        self.socket = r.tmp / "ctl" / "notedfu.sock"
        notify_path = r.tmp / f"notify-{time.monotonic_ns()}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify_path))
        self.notify.settimeout(20)
        cfg = r.tmp / "notedfu.toml"
        cfg.write_text(toml({"agent": {"poll_interval": 0.3}, "notecard": {"timeout": 5}, **(config or {})}))
        self.log = open(r.tmp / "daemon.log", "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "notedfu", "run", "--config", str(cfg), "--notecard", r.servers[0].path,
             "--target", r.target_port, "--state-dir", str(r.state), "--socket", str(self.socket), *extra],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"})
        self.client = ControlClient(self.socket)
        self.notes: list[str] = []

    def wait_note(self, needle: str) -> None:
        while not any(needle in note for note in self.notes):
            self.notes.append(self.notify.recv(4096).decode())

    def status(self) -> dict:
        return self.client.request({"cmd": "status"})

    def wait(self, predicate, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, f"timed out; daemon log:\n{self.output()}"
            time.sleep(0.05)

    def output(self) -> str:
        return (self.rig.tmp / "daemon.log").read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.notify.close()
        self.log.close()
        return code


@pytest.fixture
def daemon(rig):
    started: list[Daemon] = []

    def start(r=None, *extra: str, **kw) -> Daemon:
        started.append(Daemon(r or rig(), *extra, **kw))
        started[-1].wait_note("READY=1")
        return started[-1]

    yield start
    for d in started:
        d.stop()


def raw(path: Path, data: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # the client is done talking (a short stream ends here)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return json.loads(sock.makefile("rb").readline())


def test_daemon_installs_what_the_card_offers_and_tells_systemd(daemon):
    d = daemon()
    assert stat.S_IMODE(d.socket.stat().st_mode) == 0o600
    d.wait(lambda: d.rig.card.host_version == "1.1.0")
    d.wait(lambda: d.status()["last_job"] and d.status()["last_job"]["state"] == "success")
    answer = d.status()
    assert answer["installed"]["version"] == "1.1.0" and answer["job"] is None
    shown = run_cli("status", "--socket", str(d.socket))
    assert shown.returncode == 0 and "installed     1.1.0" in shown.stdout, shown.stdout
    assert d.rig.flash_file.read_bytes().startswith(d.rig.offered) and d.rig.card.hub_mode == "continuous"
    d.wait_note("WATCHDOG=1")
    d.wait_note("STATUS=success")
    assert d.stop() == 0
    assert not d.socket.exists()
    assert "<6>" not in d.output()  # no JOURNAL_STREAM: plain lines
    assert "[6/9] flash" in d.output()


def test_bad_requests_get_errors_and_the_daemon_keeps_serving(daemon, rig):
    r = rig()
    r.card.image, r.card.dfu_state = None, "idle"
    d = daemon(r)
    assert raw(d.socket, b"not json\n")["code"] == "E_BAD_REQUEST"
    assert raw(d.socket, b"[1, 2]\n")["code"] == "E_BAD_REQUEST"
    assert raw(d.socket, b'{"cmd": "format_disk"}\n')["code"] == "E_UNKNOWN_CMD"
    assert raw(d.socket, b"x" * (MAX_REQUEST + 10))["code"] == "E_REQUEST_TOO_LARGE"
    assert raw(d.socket, b'{"cmd": "install"}\n')["code"] == "E_BAD_REQUEST"
    assert raw(d.socket, b'{"cmd": "install", "path": "relative.bin"}\n')["code"] == "E_BAD_REQUEST"
    assert raw(d.socket, b'{"cmd": "install", "stream": true, "length": -4}\n')["code"] == "E_BAD_REQUEST"
    assert raw(d.socket, b'{"cmd": "install", "stream": true, "length": 100}\nshort')["code"] == "E_SHORT_STREAM"
    assert raw(d.socket, b'{"cmd": "approve", "md5": "../../etc"}\n')["code"] == "E_BAD_MD5"
    assert raw(d.socket, b'{"cmd": "cancel"}\n')["code"] == "E_NOTHING_TO_CANCEL"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(d.socket))  # connects and leaves without a word
    assert d.status()["ok"] is True and d.proc.poll() is None
    assert JobStore(r.state).latest() is None  # nothing was installed by any of it


def test_install_streams_an_image_refuses_a_second_and_subscribers_see_it_all(daemon, rig, tmp_path):
    r = rig()
    r.card.image, r.card.dfu_state = None, "idle"
    d = daemon(r)
    seen: list[dict] = []
    watcher = subprocess.Popen([sys.executable, "-m", "notedfu", "events", "--socket", str(d.socket), "--until",
                                "SUCCESS", "--until", "FAILURE"], stdout=subprocess.PIPE, text=True)
    reader = threading.Thread(target=lambda: seen.extend(json.loads(line) for line in watcher.stdout))
    reader.start()
    d.wait(lambda: d.status().get("subscribers") == 1)  # the subscription is in place
    image = tmp_path / "big.bin"
    image.write_bytes(padded("1.1.0", 48 * 1024))
    first = run_cli("install", str(image), "--stream", "--socket", str(d.socket))
    assert first.returncode == 0 and "queued" in first.stdout, first.stderr
    second = run_cli("install", str(image), "--socket", str(d.socket))
    assert second.returncode == ExitCode.LINK and "E_BUSY" in second.stderr
    watcher.wait(timeout=60)
    reader.join()
    job_events = seen[next(i for i, e in enumerate(seen) if e.get("status") == "START"):]  # polls said IDLE before
    statuses = [e["status"] for e in job_events if e["type"] == "status"]
    assert statuses[0] == "START" and statuses[-1] == "SUCCESS" and set(statuses[1:-1]) == {"RUN"}
    assert [e["stage"] for e in job_events if e.get("status") == "RUN"] == \
        ["check", "verify", "flash", "boot", "confirm", "report"]  # a local image skips the card's stages
    assert {e["source"] for e in job_events} == {"IPC"}
    assert any(e["type"] == "step" and e["step"] == "flash" and (e.get("percent") or 0) > 50 for e in seen)
    assert r.flash_file.read_bytes().startswith(image.read_bytes())
    assert JobStore(r.state).latest().source == "IPC"


PLAIN_PYTHON = "/usr/bin/python3"  # the venv's may sit where an unprivileged user cannot reach
AS_NOBODY = """
import json, socket, sys
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
    sock.connect(sys.argv[1])
    sock.sendall(json.dumps({"cmd": "install", "path": sys.argv[2]}).encode() + b"\\n")
    print(sock.makefile().readline())
"""


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(PLAIN_PYTHON),
                    reason="running a client as another user needs root and a system python3")
def test_install_by_path_reads_only_what_the_client_could_read_and_stages_it_0600(daemon, rig):
    r = rig()
    r.card.image, r.card.dfu_state = None, "idle"  # Notehub offers nothing: only the socket installs
    shared = Path(tempfile.mkdtemp(prefix="notedfu-peer-"))  # a place an unprivileged user can reach
    try:
        shared.chmod(0o755)
        d = daemon(r, "--socket", str(shared / "notedfu.sock"))
        (shared / "notedfu.sock").chmod(0o666)  # as an admin sharing the socket with a group would
        secret, public = shared / "secret.bin", shared / "public.bin"
        secret.write_bytes(padded("1.1.0"))
        secret.chmod(0o600)  # root's: the daemon could read it, the client cannot
        public.write_bytes(padded("1.1.0"))
        public.chmod(0o644)

        def install_as_nobody(path: Path) -> dict:
            done = subprocess.run([PLAIN_PYTHON, "-c", AS_NOBODY, str(shared / "notedfu.sock"), str(path)],
                                  user=65534, group=65534, capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        refused = install_as_nobody(secret)
        assert refused["ok"] is False and refused["code"] == "E_IMAGE_FILE" and "may not read" in refused["error"]
        assert not list((r.state / "staging").glob("*.bin"))  # nothing of it was copied
        assert install_as_nobody(public)["ok"] is True
        d.wait(lambda: r.flash_file.read_bytes().startswith(public.read_bytes()))
        staged = list((r.state / "staging").glob("*.bin"))
        assert staged and all(p.stat().st_mode & 0o777 == 0o600 for p in staged)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_manual_policy_announces_and_installs_after_approval_over_the_socket(daemon, rig):
    r = rig()
    d = daemon(r, "--policy", "manual")
    d.wait(lambda: d.status()["pending"].get("md5"))
    pending = d.status()["pending"]
    assert d.status()["state"] == "ready" and r.chip.writes == 0
    shown = run_cli("status", "--socket", str(d.socket))
    assert f"notedfu approve {pending['md5']}" in shown.stdout
    approved = run_cli("approve", pending["md5"], "--socket", str(d.socket))
    assert approved.returncode == 0, approved.stderr
    d.wait(lambda: r.card.host_version == "1.1.0")
    assert r.flash_file.read_bytes().startswith(r.offered)


def test_cancel_stops_the_download_and_is_refused_once_the_flash_began(daemon, rig):
    r = rig(offered=padded("1.1.0", 48 * 1024), per_kib="0.05")
    d = daemon(r)
    d.wait(lambda: (d.status().get("job") or {}).get("stages", {}).get("transfer", {}).get("state") == "running"
           or (d.status().get("job") or {}).get("stages", {}).get("enter_dfu", {}).get("state") == "running")
    cancelled = run_cli("cancel", "--socket", str(d.socket))
    assert cancelled.returncode == 0, cancelled.stderr
    d.wait(lambda: d.status()["last_job"] and d.status()["last_job"]["state"] == "fail")
    job = JobStore(r.state).latest()
    assert job.error["code"] == "E_CANCELLED" and r.chip.writes == 0
    assert r.card.hub_mode == "continuous"
    assert (r.state / "staging" / f"{job.md5}.json").exists()  # what was fetched is kept for a later try

    r.card.stage(padded("1.1.0", 96 * 1024), "next.bin")
    d.wait(lambda: r.chip.writes > 20)
    too_late = run_cli("cancel", "--socket", str(d.socket))
    assert too_late.returncode == ExitCode.USAGE and "E_TOO_LATE" in too_late.stderr
    d.wait(lambda: r.card.host_version == "1.1.0")


def test_a_cancel_while_the_flash_stage_connects_is_refused_and_never_reaches_the_next_job(daemon, rig):
    r = rig()
    r.chip.running_app = True  # no reset line, and the application runs: the flash stage cannot sync for now
    d = daemon(r, config={"agent": {"poll_interval": 0.3, "retry_backoff": 1, "retry_backoff_max": 1}})
    d.wait(lambda: ((d.status().get("job") or {}).get("stages", {}).get("flash") or {}).get("state") == "running")
    refused = run_cli("cancel", "--socket", str(d.socket))
    assert refused.returncode == ExitCode.USAGE and "E_TOO_LATE" in refused.stderr, refused.stderr
    d.wait(lambda: (((d.status().get("job") or {}).get("error")) or {}).get("code") == "E_TARGET_NO_SYNC")
    r.chip.running_app = False  # someone put the board back in its bootloader: the next attempt flashes
    d.wait(lambda: (d.status().get("last_job") or {}).get("state") in ("success", "fail"))
    job = JobStore(r.state).latest()
    assert job.state == "success" and r.flash_file.read_bytes().startswith(r.offered)  # not cancelled later


def test_sigterm_during_the_download_hands_the_card_back_and_the_next_start_continues(daemon, rig):
    r = rig(offered=padded("1.1.0", 48 * 1024), per_kib="0.05")
    d = daemon(r)
    d.wait(lambda: ((d.status().get("job") or {}).get("stages", {}).get("transfer") or {}).get("state")
           == "running")  # the card is in DFU mode, the image coming
    assert d.stop() == 0
    assert r.card.hub_mode == "continuous" and r.chip.writes == 0
    job = JobStore(r.state).current()
    assert job is not None and job.state == "processing"  # persisted, not failed
    again = daemon(r)
    again.wait(lambda: r.card.host_version == "1.1.0")
    assert JobStore(r.state).latest().id == job.id
    assert r.flash_file.read_bytes().startswith(r.offered)


def test_sigterm_during_the_flash_finishes_the_flash_first(daemon, rig):
    r = rig(offered=padded("1.1.0", 96 * 1024))
    d = daemon(r)
    d.wait(lambda: r.chip.writes > 10)
    assert d.stop() == 0
    assert r.flash_file.read_bytes().startswith(r.offered)  # the whole image, not half of it
    job = JobStore(r.state).current()
    assert job.stages["flash"].state == "done" and job.stages["boot"].state == "pending"
    assert "the flash was finished first" in d.output()
    again = daemon(r)
    again.wait(lambda: r.card.host_version == "1.1.0")


def test_a_second_daemon_on_the_same_state_is_refused(daemon, rig):
    d = daemon()
    second = subprocess.run([sys.executable, "-m", "notedfu", "run", "--notecard", d.rig.servers[0].path,
                             "--target", d.rig.target_port, "--state-dir", str(d.rig.state),
                             "--socket", str(d.rig.tmp / "other.sock")],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == ExitCode.LINK and "E_BUSY" in second.stderr
    assert d.status()["ok"] is True


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_the_shipped_unit_file_is_valid(tmp_path):
    unit = Path(notedfu.__file__).parent / "data" / "notedfu.service"
    text = unit.read_text()
    assert "Type=notify" in text and "notedfu run" in text and "WatchdogSec=" in text
    local = tmp_path / "notedfu.service"
    local.write_text(text.replace("/opt/notedfu/bin/notedfu", str(Path(sys.executable).parent / "notedfu")))
    checked = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    for needed in ("RestartPreventExitStatus=2", "LogsDirectory=notedfu", "UMask=0077", "DevicePolicy=closed",
                   "RestrictAddressFamilies=AF_UNIX", "ReadWritePaths=/run/lock"):
        assert needed in text
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(local)], capture_output=True,
                              text=True)
    exposure = float(security.stdout.split("Overall exposure level for notedfu.service:")[1].split()[0])
    assert exposure <= 3.0, security.stdout[-3000:]


def test_a_card_slow_to_enter_dfu_mode_keeps_its_image_and_the_attempt_after_the_backoff_succeeds(daemon, rig):
    r = rig(ready_delay="20")  # the card needs 20 s to power its DFU storage; the agent waits only 5
    d = daemon(r, config={"notecard": {"timeout": 5, "ready_timeout": 5},
                          "agent": {"poll_interval": 0.3, "retry_backoff": 16}})
    d.wait(lambda: (d.status().get("job") or {}).get("error", {}).get("kind") == "transient", timeout=30)
    job = d.status()["job"]
    assert job["error"]["code"] == "E_DFU_NOT_READY" and job["error"]["stage"] == "enter_dfu"
    assert r.card.reports == [] and r.card.dfu_state == "ready" and r.card.image == r.offered  # nothing lost
    assert r.card.hub_mode == "continuous"  # handed back while it waits
    shown = run_cli("status", "--socket", str(d.socket))
    assert "retry         transient E_DFU_NOT_READY" in shown.stdout and "next attempt" in shown.stdout
    d.wait(lambda: (d.status().get("last_job") or {}).get("state") == "success", timeout=45)
    assert JobStore(r.state).latest().attempts == 2  # the same job, its second attempt
    assert r.card.reports[0] == {"stop": True, "status": "firmware 1.1.0 installed"}
    assert r.flash_file.read_bytes().startswith(r.offered)


def test_a_socket_that_takes_the_request_and_never_answers_is_a_clear_error(tmp_path):
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(path))
        silent.listen()  # accepts (the kernel does), never reads, never answers
        with pytest.raises(NotedfuError) as info:
            ControlClient(path, timeout=0.5).request({"cmd": "status"})
    assert info.value.code == "E_SOCKET" and info.value.exit_code == ExitCode.NO_DAEMON
    assert "did not answer within 0.5 s" in info.value.message
    typo = run_cli("approve", "0" * 32, "--socket", str(tmp_path / "typo.sock"))
    assert typo.returncode == ExitCode.NO_DAEMON and "E_NO_DAEMON" in typo.stderr, typo.stderr
