"""The public modules type-check: mypy finds no error in what users call.

`import stir_lib` exports STIR, its controls, inversion, layers, CKA, the attacks and the
models with typed signatures (and ships ``py.typed``); mypy checks those modules against
torch's own annotations. Imports of other modules are followed silently (their own errors
are not this test's), and a planted error shows that the check can fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stir_lib.paths import repo_root

PUBLIC = ["__init__", "stir", "stir_result", "stir_batches", "baselines", "inversion", "threads",
          "features", "similarity", "batch_cka", "attacks", "models"]


def mypy(paths: list[Path], cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("mypy", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("mypy: expected it beside this Python (the test extra pins it); run make "
                    "setup or pip install -e '.[test]'")
    return subprocess.run([exe, "--python-executable", sys.executable,
                           "--follow-imports=silent", "--ignore-missing-imports",
                           "--cache-dir", str(cache), "--no-error-summary", *map(str, paths)],
                          capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One mypy cache for both tests: torch's own modules are analysed once."""
    return tmp_path_factory.mktemp("mypy-cache")


def test_the_public_modules_type_check(cache):
    paths = [Path("stir_lib") / f"{m}.py" for m in PUBLIC]
    proc = mypy(paths, cache, repo_root())
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_type_error_is_found(tmp_path, cache):
    """The same check on a copy of the package with one planted error in similarity.py."""
    shutil.copytree(repo_root() / "stir_lib", tmp_path / "stir_lib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "stir_lib" / "similarity.py", "a") as f:
        f.write("\n_planted: str = linear_cka\n")
    proc = mypy([Path("stir_lib") / "similarity.py"], cache, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "similarity.py" in proc.stdout and "Incompatible types in assignment" in proc.stdout
