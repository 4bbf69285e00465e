"""The library as a wheel: every sub-package and the type marker are in it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(out)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode and "No module named" in proc.stderr:
        pytest.skip(f"cannot build a wheel here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (found,) = out.glob("stir_lib-*.whl")
    return found


def test_wheel_holds_every_sub_package_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(p.parent.relative_to(ROOT).as_posix()
                      for p in (ROOT / "stir_lib").rglob("__init__.py"))
    assert len(packages) >= 7    # stir_lib, book, chapters, data, jobs, spectral, transfer
    missing = [p for p in packages if f"{p}/__init__.py" not in names]
    assert not missing, f"sub-packages missing from the wheel: {missing}"
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "stir_lib").rglob("*.py"))
    assert [m for m in modules if m not in names] == []
    assert "stir_lib/py.typed" in names
