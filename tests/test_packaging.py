"""The package installs with the layout of DESIGN.md: top-level export/ ships as odegrad.export."""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_installed_distribution_and_console_script():
    dist = importlib.metadata.distribution("odegrad")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts["odegrad"] == "odegrad.cli:main"


def test_version_option_prints_the_installed_version(capsys):
    from odegrad.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"odegrad {importlib.metadata.version('odegrad')}\n"


def test_export_is_importable_as_a_subpackage():
    import odegrad.export

    assert Path(odegrad.export.__file__).parent.name == "export"


def _import_odegrad_from(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    code = "import odegrad; print(odegrad.__file__); from odegrad.export import save_model; print(odegrad.__version__)"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_folder_named_odegrad_in_the_working_directory_does_not_shadow_the_install(tmp_path):
    # Python run from the folder that contains a clone named `odegrad`: the current directory comes
    # first on sys.path, and the clone's root (no __init__.py) must not become an empty namespace package.
    (tmp_path / "odegrad").symlink_to(ROOT, target_is_directory=True)
    result = _import_odegrad_from(tmp_path)
    assert result.returncode == 0, result.stderr
    init_file, version = result.stdout.split()
    assert version == importlib.metadata.version("odegrad")
    assert Path(init_file).name == "__init__.py" and tmp_path not in Path(init_file).parents


def test_a_regular_odegrad_package_on_pythonpath_still_takes_precedence(tmp_path):
    (tmp_path / "odegrad").mkdir()
    (tmp_path / "odegrad" / "__init__.py").write_text("")
    result = _import_odegrad_from(ROOT.parent, pythonpath=tmp_path)
    assert result.stdout.splitlines()[0] == str(tmp_path / "odegrad" / "__init__.py")


@pytest.mark.slow
def test_wheel_maps_export_directory_to_odegrad_export(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("odegrad-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "odegrad/export/__init__.py" in names
    assert "odegrad/py.typed" in names
    assert "odegrad/solvers/_rk.py" in names and "odegrad/gradients/_backsolve.py" in names
    assert not any(name.startswith("export/") for name in names)


@pytest.mark.slow
def test_sdist_carries_the_build_backend_and_builds_a_wheel(tmp_path):
    # From a copy without build leftovers: setuptools also puts whatever an old egg-info lists in the sdist.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "venv", "*.egg-info", "build", "dist", "site", "__pycache__", ".*_cache", ".hypothesis"))
    build_sdist = "import sys, build_backend; print(build_backend.build_sdist(sys.argv[1]))"
    result = subprocess.run([sys.executable, "-c", build_sdist, str(tmp_path)], cwd=source,
                            env={**os.environ, "PYTHONPATH": str(source / "tools")}, check=True,
                            capture_output=True, text=True)
    sdist = tmp_path / result.stdout.split()[-1]
    with tarfile.open(sdist) as archive:
        assert f"{sdist.name.removesuffix('.tar.gz')}/tools/build_backend.py" in archive.getnames()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(sdist)], check=True, capture_output=True)
    assert list(tmp_path.glob("odegrad-*.whl"))
