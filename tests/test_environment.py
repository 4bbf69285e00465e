"""The three descriptions of the environment agree: pyproject.toml, environment.yml and
requirements/lock.txt pin the same exact versions, and the lock covers every direct pin."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?"  # name[extras]
                 r"\s*==\s*([0-9][A-Za-z0-9.!+]*)\s*$")  # == exact version


def norm(name: str) -> str:
    """PEP 503 name: lowercase, runs of '-', '_', '.' as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(lines, where: str) -> dict[str, str]:
    """Requirement strings -> {normalised name: version}; anything but `name==version` fails."""
    pins = {}
    for line in lines:
        m = PIN.match(line)
        assert m, f"{where}: expected an exact pin `name==version`, got {line!r}"
        name = norm(m.group(1))
        assert name not in pins, f"{where}: {name} pinned twice"
        pins[name] = m.group(3)
    return pins


@pytest.fixture(scope="module")
def pyproject():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"dependencies": data["dependencies"],
              **{f"extra {k}": v for k, v in data.get("optional-dependencies", {}).items()}}
    pins: dict[str, str] = {}
    for where, reqs in groups.items():
        for name, version in parse_pins(reqs, f"pyproject.toml {where}").items():
            assert name not in pins, f"pyproject.toml: {name} appears in two groups"
            pins[name] = version
    return pins


@pytest.fixture(scope="module")
def conda_env():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


@pytest.fixture(scope="module")
def conda_pins(conda_env):
    pip_lists = [d["pip"] for d in conda_env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml: expected one pip: list"
    reqs = [r for r in pip_lists[0] if not r.startswith("-")]  # -c lock, -e . are options
    return parse_pins(reqs, "environment.yml pip")


@pytest.fixture(scope="module")
def lock():
    lines = [ln.strip() for ln in (ROOT / "requirements" / "lock.txt").read_text().splitlines()]
    return parse_pins([ln for ln in lines if ln and not ln.startswith("#")], "lock.txt")


def test_pyproject_pins_are_exact(pyproject):
    assert {"torch", "numpy", "pytest", "papermill", "jupyter-book"} <= set(pyproject)


def test_environment_yml_matches_pyproject(pyproject, conda_pins):
    for name, version in conda_pins.items():
        if name in pyproject:
            assert version == pyproject[name], (f"{name}: environment.yml pins {version}, "
                                                f"pyproject.toml {pyproject[name]}")
    missing = sorted(set(pyproject) - set(conda_pins))
    assert not missing, f"environment.yml lacks pyproject pins {missing}"


def test_environment_yml_uses_the_lock(conda_env):
    pip_list = next(d["pip"] for d in conda_env["dependencies"] if isinstance(d, dict))
    assert "-c requirements/lock.txt" in pip_list and "-e ." in pip_list


def test_lock_covers_every_direct_pin(pyproject, conda_pins, lock):
    for source, pins in (("pyproject.toml", pyproject), ("environment.yml", conda_pins)):
        for name, version in pins.items():
            assert name in lock, f"{name} ({source}) is not in requirements/lock.txt"
            assert lock[name] == version, (f"{name}: {source} pins {version}, "
                                           f"lock.txt {lock[name]}")


def test_python_version_agrees(conda_env):
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    conda_python = next(d for d in conda_env["dependencies"]
                        if isinstance(d, str) and d.startswith("python="))
    minor = conda_python.split("=", 1)[1]
    assert requires == f">={minor},<3.{int(minor.split('.')[1]) + 1}", (requires, conda_python)


def test_installed_versions_match_pins(pyproject):
    """The environment the tests run in is the pinned one (local labels such as +cpu aside)."""
    wrong = {}
    for name, version in pyproject.items():
        try:
            got = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong[name] = (version, "not installed")
            continue
        if got.split("+", 1)[0] != version:
            wrong[name] = (version, got)
    assert not wrong, f"installed versions differ from the pins (pinned, installed): {wrong}"


def test_parse_pins_rejects_loose_specifiers():
    for bad in ("numpy>=2", "numpy", "numpy~=2.4", "numpy==2.*", "numpy==2.4,<3"):
        with pytest.raises(AssertionError, match="expected an exact pin"):
            parse_pins([bad], "test")
    assert parse_pins(["Scikit_Learn==1.9.1"], "test") == {"scikit-learn": "1.9.1"}
