"""The package a user installs: one import name, every module in it, and the layers that README's
"Architecture" describes, checked by import-linter on the installed copy.

import-linter finds a package's modules by walking its directory; in a checkout, maint.flows and
maint.tasks live beside maint/ (pyproject's package-dir), so the contracts are checked where they
mean something: in the wheel, unpacked as pip would install it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import system_fixture

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"maint": ROOT / "maint", "maint/flows": ROOT / "flows", "maint/tasks": ROOT / "tasks",
          "maint/deployments": ROOT / "deployments"}
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@system_fixture(scope="module")  # pip builds the package: these are systems tests
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
                            str(ROOT)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    [path] = out.glob("maint-*.whl")
    return path


@pytest.fixture
def installed(wheel, tmp_path) -> Path:
    """The wheel unpacked into a directory of its own: what `pip install` puts in site-packages."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    return site


def _python(site: Path, code: str) -> subprocess.CompletedProcess:
    # cwd and PYTHONPATH are the unpacked copy: the checkout's folders are not on the path.
    return subprocess.run([sys.executable, "-c", code], cwd=site, env={"PYTHONPATH": str(site)},
                          capture_output=True, text=True)


def _lint(site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")], cwd=site,
                          env={"PYTHONPATH": str(site)}, capture_output=True, text=True)


def test_the_wheel_installs_one_import_name_holding_every_module(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"maint", wheel.name.split("-py3")[0] + ".dist-info"}
    # Every module of the checkout's mapped folders is in the wheel (a subpackage missing from
    # pyproject's `packages` list would be left out silently).
    expected = {f"{prefix}/{path.relative_to(folder)}" for prefix, folder in MAPPED.items()
                for path in folder.rglob("*.py") if "__pycache__" not in path.parts
                and not (prefix == "maint" and path.relative_to(folder).parts[0] in ("flows", "tasks", "deployments"))}
    assert expected <= set(names), sorted(expected - set(names))
    assert {"maint/flows/backup.py", "maint/tasks/storage/base.py", "maint/deployments/__init__.py"} <= set(names)


def test_generic_top_level_names_are_not_importable(installed):
    for generic in ("flows", "tasks", "deployments"):
        result = _python(installed, f"import {generic}")
        assert result.returncode != 0 and f"No module named '{generic}'" in result.stderr, result.stderr
    found = _python(installed, "import maint.flows, maint.tasks.storage.base; print(maint.flows.__file__)")
    assert found.returncode == 0 and found.stdout.strip() == str(installed / "maint" / "flows" / "__init__.py")


def test_the_import_contracts_hold(installed):
    result = _lint(installed)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("maint/report.py", "from maint.tasks import postgres", "layers: entry points"),
    ("maint/verification.py", "import psycopg", "pure core: no I/O"),
    ("maint/flows/dr_drill.py", "from maint.flows import restore_test", "flows: no duty module imports another"),
    ("maint/tasks/storage/gcs.py", "from maint.tasks import postgres", "systems: independent"),
    ("maint/demo.py", "from maint.cli import main", "no import cycles"),
])
def test_the_import_contracts_catch_what_they_forbid(installed, module, line, broken):
    with open(installed / module, "a") as f:
        f.write(f"\n{line}  # planted by the test\n")
    result = _lint(installed)
    assert result.returncode != 0
    assert any(broken in text and "BROKEN" in text for text in result.stdout.splitlines()), result.stdout[-4000:]
