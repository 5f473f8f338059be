"""notedfu on labgrid, with labgrid's real engine: a coordinator, exporters serving the simulated rig's ports
(labgrid's exporter runs ser2net for them), places created and acquired with ``labgrid-client``, and the
drivers, the strategy and the hil scenarios run through them.

Skips, saying why, when labgrid (``pip install 'notedfu[labgrid]'``) or ser2net (``apt-get install ser2net``)
is not installed; ``.ci/run`` installs both.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from notedfu.sim.qemu import qemu_available

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

try:
    import labgrid  # noqa: F401
    LABGRID = shutil.which("labgrid-coordinator", path=str(BIN)) or shutil.which("labgrid-coordinator")
except ImportError:
    LABGRID = None
SER2NET = shutil.which("ser2net") or ("/usr/sbin/ser2net" if os.path.exists("/usr/sbin/ser2net") else None)
pytestmark = [
    pytest.mark.skipif(LABGRID is None, reason="labgrid is not installed (pip install 'notedfu[labgrid]')"),
    pytest.mark.skipif(SER2NET is None, reason="ser2net is not installed (apt-get install ser2net): labgrid's "
                                               "exporter serves serial ports through it"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool(name: str) -> str:
    return shutil.which(name, path=str(BIN)) or name


class Lab:
    """A coordinator on this machine, and rigs exported to it: each a simulated Notecard and an emulated
    STM32F100 (BOOT0/NRST on a simulated GPIO chip) on pseudo-terminals, exported by its own labgrid-exporter
    and reserved as a place of the same name."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.address = f"127.0.0.1:{free_port()}"
        self.env = {**os.environ, "LG_COORDINATOR": self.address, "PYTHONPATH": str(REPO)}
        self.processes: list[subprocess.Popen] = []
        # The coordinator keeps its places in places.yaml in its working directory: this lab's own.
        self.spawn([tool("labgrid-coordinator"), "-l", self.address], "coordinator", cwd=workdir)
        self.wait_for(lambda: self.client("places").returncode == 0, "the coordinator to answer")

    def spawn(self, argv: list[str], log: str, **kwargs) -> subprocess.Popen:
        out = open(self.workdir / f"{log}.log", "w")
        process = subprocess.Popen(argv, stdout=kwargs.pop("stdout", out), stderr=subprocess.STDOUT, env=self.env,
                                   text=True, **kwargs)
        self.processes.append(process)
        return process

    def client(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([tool("labgrid-client"), *args], capture_output=True, text=True, env=self.env,
                              timeout=60)

    @staticmethod
    def wait_for(condition, what: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.3)

    def rig(self, name: str, offered: Path) -> Path:
        """Export a simulated rig as place ``name``, acquire it, and return its labgrid environment file."""
        work = self.workdir / name
        work.mkdir()
        card = self.spawn([sys.executable, "-m", "notedfu", "sim", "notecard", "--pty", "--image", str(offered),
                           "--profile", "usb"], f"{name}-card", stdout=subprocess.PIPE)
        flash = work / "flash.bin"
        gpio = Path(f"/tmp/notedfu-lg-{os.getpid()}-{name}.sock")  # a short path: Unix sockets take 108 bytes
        chip = self.spawn([sys.executable, "-m", "notedfu", "sim", "stm32", "--pty", "--flash-file", str(flash),
                           "--gpio", str(gpio), "--time-scale", "0.2"], f"{name}-chip", stdout=subprocess.PIPE)
        card_pty, chip_pty = card.stdout.readline().strip(), chip.stdout.readline().strip().partition("?")[0]
        (work / "exporter.yaml").write_text(
            f"{name}-rig:\n"
            f"  NotecardPort:\n    cls: RawSerialPort\n    port: {card_pty}\n    speed: 115200\n"
            f"  TargetPort:\n    cls: RawSerialPort\n    port: {chip_pty}\n    speed: 115200\n")
        self.spawn([tool("labgrid-exporter"), "-c", self.address, "-n", name, "--hostname", "127.0.0.1",
                    str(work / "exporter.yaml")], f"{name}-exporter")
        self.wait_for(lambda: self.client("resources").stdout.count(f"{name}/{name}-rig/") == 2,
                      f"exporter {name}'s two ports")
        for args in (("create",), ("add-match", f"{name}/{name}-rig/*"), ("acquire",)):
            done = self.client("-p", name, *args)
            assert done.returncode == 0, done.stderr
        env = work / "env.yaml"
        console = f"qemu:{flash}" if qemu_available() else ""
        env.write_text(f"""targets:
  main:
    resources:
      RemotePlace:
        name: {name}
    drivers:
      NotecardDFUDriver:
        bindings:
          port: NotecardPort
      STM32ROMDriver:
        parity: none
        boot0: sim-gpio:{gpio}:0
        reset: sim-gpio:{gpio}:1
        bindings:
          port: TargetPort
      NotedfuStrategy: {{}}
options:
  console: "{console}"
  confirm_timeout: 20
imports:
  - notedfu.labgrid
""")
        return env

    def close(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def lab(tmp_path):
    made = Lab(tmp_path)
    try:
        yield made
    finally:
        made.close()


def demo(version: str) -> Path:
    return REPO / "firmware" / "prebuilt" / f"demo-{version}.bin"


def test_the_drivers_and_the_strategy_through_a_remote_place(lab, monkeypatch, tmp_path):
    """A labgrid Environment over the acquired place: the strategy takes the board to its bootloader, then
    to 'updated' (the card's image downloaded, verified and flashed through the exported ports), then runs it."""
    from labgrid import Environment

    env_file = lab.rig("bench1", demo("1.1.0"))
    monkeypatch.setenv("LG_COORDINATOR", lab.address)
    env = Environment(str(env_file))
    target = env.get_target("main")
    strategy = target.get_driver("NotedfuStrategy")
    try:
        strategy.transition("bootloader")
        info = target.get_driver("STM32ROMDriver").info()
        assert info["chip"].startswith("STM32F100") and info["bootloader"] == "2.2"
        card = target.get_driver("NotecardDFUDriver")
        assert card.spec.startswith("rfc2217://127.0.0.1:")  # the exporter's port, not the pty
        assert card.status()["dfu"]["mode"] == "ready"
        strategy.state_dir = str(tmp_path / "state")
        strategy.transition("updated")
        assert strategy.last_update["version"] == "1.1.0" and strategy.last_update["pages_written"] >= 1
        flash = (lab.workdir / "bench1" / "flash.bin").read_bytes()
        assert flash.startswith(demo("1.1.0").read_bytes())
        strategy.transition("bootloader")
        strategy.transition("application")
    finally:
        env.cleanup()


def run_hil(env_file: Path, lab: Lab, *selection: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
                             str(REPO / "hil"), "--lg-env", str(env_file), "-k", " or ".join(selection)],
                            cwd=REPO, env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


SCENARIOS = ("test_full_update", "test_downgrade_is_refused", "test_image_with_a_wrong_signature_is_refused")


def test_the_hil_scenarios_through_two_places_at_once(lab):
    """`pytest hil --lg-env env.yaml`, twice at once: two pytest processes, each with its own acquired place
    (its own exporter, ports and board), through the same coordinator."""
    one = lab.rig("rigA", demo("1.1.0"))
    two = lab.rig("rigB", demo("1.1.0"))
    both = [run_hil(one, lab, *SCENARIOS), run_hil(two, lab, *SCENARIOS)]
    outs = [p.communicate(timeout=600)[0] for p in both]
    for process, output in zip(both, outs):
        assert process.returncode == 0 and f"{len(SCENARIOS)} passed" in output, output


def test_boot0_and_nrst_through_labgrid_digital_outputs(tmp_path):
    """A local place whose BOOT0 and NRST are labgrid outputs (FileDigitalOutputDriver here, as sysfs GPIO
    would be): entering the bootloader drives them through labgrid, and the chip answers on the port."""
    from labgrid import Environment

    chip = subprocess.Popen([sys.executable, "-m", "notedfu", "sim", "stm32", "--pty", "--flash-file",
                             str(tmp_path / "flash.bin"), "--time-scale", "0.2"], stdout=subprocess.PIPE, text=True)
    try:
        pty = chip.stdout.readline().strip().partition("?")[0]
        for name in ("boot0", "nrst"):
            (tmp_path / name).write_text("0\n")
        env_file = tmp_path / "env.yaml"
        env_file.write_text(f"""targets:
  main:
    resources:
      RawSerialPort:
        port: {pty}
        speed: 115200
    drivers:
      - FileDigitalOutputDriver:
          name: boot0
          filepath: {tmp_path / "boot0"}
      - FileDigitalOutputDriver:
          name: nrst
          filepath: {tmp_path / "nrst"}
      - STM32ROMDriver:
          parity: none
          bindings:
            boot0_output: boot0
            reset_output: nrst
imports:
  - notedfu.labgrid
""")
        env = Environment(str(env_file))
        try:
            target = env.get_target("main")
            stm32 = target.get_driver("STM32ROMDriver")
            assert stm32.info()["chip"].startswith("STM32F100")
            # notedfu's entry sequence ends with BOOT0 high and NRST released (boot0=1,reset=1,…,reset=0).
            assert (tmp_path / "boot0").read_text() == "1\n" and (tmp_path / "nrst").read_text() == "0\n"
            stm32.start()  # the run sequence: BOOT0 low, a reset pulse
            assert (tmp_path / "boot0").read_text() == "0\n" and (tmp_path / "nrst").read_text() == "0\n"
        finally:
            env.cleanup()
    finally:
        chip.kill()
        chip.wait()
