"""The package installs with the layout of DESIGN.md: top-level export/ ships as odegrad.export."""

import importlib.metadata
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_installed_distribution_and_console_script():
    dist = importlib.metadata.distribution("odegrad")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts["odegrad"] == "odegrad.cli:main"


def test_export_is_importable_as_a_subpackage():
    import odegrad.export

    assert Path(odegrad.export.__file__).parent.name == "export"


@pytest.mark.slow
def test_wheel_maps_export_directory_to_odegrad_export(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("odegrad-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "odegrad/export/__init__.py" in names
    assert "odegrad/solvers/rk.py" in names and "odegrad/gradients/backsolve.py" in names
    assert not any(name.startswith("export/") for name in names)
