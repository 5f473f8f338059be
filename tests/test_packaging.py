"""What `pip install .` (not editable) installs: every package, the unit file and the demo firmware."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_setup_cfg_lists_every_package_directory():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "notedfu").rglob("__init__.py")}
    assert listed == found | {"notedfu.prebuilt"}  # the demo firmware, mapped from firmware/prebuilt


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed into a directory of its own."""
    try:
        import setuptools
    except ImportError:
        pytest.skip("setuptools is not installed")
    if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (70, 1):
        pytest.skip(f"setuptools {setuptools.__version__} cannot build a wheel by itself (pip install '.[test]')")
    work = tmp_path_factory.mktemp("wheel")
    # A private copy: setuptools builds in the source tree (build/, *.egg-info), and two suites running at
    # once on one checkout would build over each other.
    source = work / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                                ".pytest_cache", "dist"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(work / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((work / "dist").glob("notedfu-*.whl"))
    target = work / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return target


def test_the_installed_package_runs_the_demo_from_its_own_firmware(installed, tmp_path):
    assert sorted(p.name for p in (installed / "notedfu" / "prebuilt").glob("*.bin")) == \
        sorted(p.name for p in (REPO / "firmware" / "prebuilt").glob("*.bin"))
    env = {**os.environ, "PYTHONPATH": str(installed)}  # the installed copy first, not the checkout
    where = subprocess.run([sys.executable, "-c", "import notedfu, notedfu.sim.rig as r; print(notedfu.__file__);"
                            "print(r.FIRMWARE_DIR)"], capture_output=True, text=True, env=env, cwd=tmp_path)
    module, firmware = where.stdout.split()
    assert module.startswith(str(installed)) and firmware.startswith(str(installed)), where.stdout
    demo = subprocess.run([sys.executable, "-m", "notedfu", "demo", "--no-qemu", "--json"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=180)
    assert demo.returncode == 0, demo.stderr
    summary = json.loads(demo.stdout.splitlines()[-1])
    assert summary["type"] == "summary" and summary["outcome"] == "success", summary
