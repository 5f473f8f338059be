"""``--rig FILE`` or ``--lg-env ENV`` (labgrid): run the scenarios on those boards; without either, on the
simulated rig."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.hilrig import HilRig, RigDescription, RigFileError


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--rig", type=Path, metavar="FILE",
                     help="rig description (TOML, see hil/rig.example.toml); default: the simulated rig")


@pytest.fixture(scope="session")
def rig_description(request: pytest.FixtureRequest) -> RigDescription | None:
    path = request.config.getoption("--rig")
    if path is None and _labgrid_env(request.config):
        from hil.lgrig import description_from_labgrid

        try:
            return description_from_labgrid(request.getfixturevalue("target"), request.getfixturevalue("env"))
        except RigFileError as exc:
            raise pytest.UsageError(str(exc)) from None
    if path is None:
        return None
    try:
        return RigDescription.load(path)
    except RigFileError as exc:
        raise pytest.UsageError(str(exc)) from None


def _labgrid_env(config: pytest.Config) -> str | None:
    """``--lg-env`` (labgrid's pytest plugin adds it when labgrid is installed)."""
    try:
        return config.getoption("--lg-env")
    except ValueError:
        return None


@pytest.fixture
def hil(rig_description: RigDescription | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The rig for one scenario, its board flashed with firmware 1.0.0 and running it."""
    monkeypatch.setenv("NOTECARD_SERIAL_LOCK_PATH", str(tmp_path / "serial.lock"))
    rig = HilRig.simulated(tmp_path / "rig") if rig_description is None else HilRig(rig_description,
                                                                                      tmp_path / "state")
    try:
        old = tmp_path / "demo-1.0.0.bin"
        old.write_bytes(rig.image("1.0.0"))
        done = rig.flash_directly(old)
        assert done.returncode == 0, f"could not put the board in its starting state: {done.stderr}"
        yield rig
    finally:
        rig.close()


@pytest.fixture
def needs_console(hil: HilRig) -> None:
    """Skip a scenario that watches the application's console when the rig has none."""
    if not hil.d.console:
        pytest.skip("no console: the simulated rig needs qemu-system-arm (sudo apt-get install qemu-system-arm); "
                    "a real rig needs [console] port")


@pytest.fixture
def simulated_only(hil: HilRig) -> None:
    """Skip a scenario that needs a card that misbehaves on purpose."""
    if hil.sim is None:
        pytest.skip("needs a Notecard that lies about the image: the simulated rig only")
