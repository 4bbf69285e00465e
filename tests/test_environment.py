"""The three descriptions of the environment agree. pyproject.toml states ranges (the library
installs beside a user's own torch); requirements/lock.txt pins every package of the book's
environment exactly; environment.yml pins, with the lock's versions, every package that
pyproject.toml names. So: every range admits the lock's pin, the lock pins every package
the dependencies and extras name, and environment.yml agrees with the lock."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?"  # name[extras]
                 r"\s*==\s*([0-9][A-Za-z0-9.!+]*)\s*$")  # == exact version
# The library's core: what `pip install stir_lib` brings (tests/test_install.py installs it).
CORE = {"torch", "numpy", "scipy"}
# Extras a user may pick; `book` must hold all of their packages (it is the book's set-up).
USER_EXTRAS = ("vision", "plot", "data", "cluster")


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


def parse_ranges(lines, where: str) -> dict[str, SpecifierSet]:
    """Requirement strings -> {normalised name: specifier}; a bare name (no range) fails, so
    does an exact pin (`==`: the pins live in the lock) and a duplicate."""
    ranges = {}
    for line in lines:
        try:
            req = Requirement(line)
        except InvalidRequirement as err:
            raise AssertionError(f"{where}: expected a requirement `name>=x`, got {line!r} "
                                 f"({err})") from err
        name = norm(req.name)
        assert name not in ranges, f"{where}: {name} listed twice"
        assert str(req.specifier), (f"{where}: expected a range for {name} (`{name}>=x`), got "
                                    f"{line!r}; state the oldest release the code works with")
        exact = [s for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]
        assert not exact, (f"{where}: expected a range for {name}, got the exact pin {line!r}; "
                           f"exact versions belong in requirements/lock.txt")
        ranges[name] = req.specifier
    return ranges


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def groups(project) -> dict[str, dict[str, SpecifierSet]]:
    """'dependencies' and each extra -> {name: range}."""
    raw = {"dependencies": project["dependencies"], **project.get("optional-dependencies", {})}
    return {g: parse_ranges(reqs, f"pyproject.toml {g}") for g, reqs in raw.items()}


@pytest.fixture(scope="module")
def named(groups) -> dict[str, list[tuple[str, SpecifierSet]]]:
    """Every package pyproject.toml names -> [(group, range), ...]."""
    out: dict[str, list] = {}
    for g, ranges in groups.items():
        for name, spec in ranges.items():
            out.setdefault(name, []).append((g, spec))
    return out


@pytest.fixture(scope="module")
def conda_env():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


@pytest.fixture(scope="module")
def conda_pip(conda_env):
    pip_lists = [d["pip"] for d in conda_env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml: expected one pip: list"
    return pip_lists[0]


@pytest.fixture(scope="module")
def conda_pins(conda_pip):
    reqs = [r for r in conda_pip if not r.startswith("-")]  # -c lock, -e . are options
    return parse_pins(reqs, "environment.yml pip")


@pytest.fixture(scope="module")
def lock():
    lines = [ln.strip() for ln in (ROOT / "requirements" / "lock.txt").read_text().splitlines()]
    return parse_pins([ln for ln in lines if ln and not ln.startswith("#")], "lock.txt")


def test_the_core_is_torch_numpy_and_scipy(groups):
    assert set(groups["dependencies"]) == CORE, (
        f"pyproject.toml dependencies: expected only {sorted(CORE)} (everything else is an "
        f"extra, imported where it is used), got {sorted(groups['dependencies'])}")


def test_the_extras_people_install(groups):
    expected = {*USER_EXTRAS, "book", "test"}
    assert set(groups) - {"dependencies"} == expected, sorted(groups)
    assert "torchvision" in groups["vision"] and "submitit" in groups["cluster"]
    assert {"matplotlib", "seaborn"} <= set(groups["plot"])


def test_book_holds_every_user_extra(groups):
    """`pip install -e ".[book,test]"` (make's set-up) gets every optional package, and the
    book's tooling; the test extra is separate."""
    missing = {e: sorted(set(groups[e]) - set(groups["book"])) for e in USER_EXTRAS}
    missing = {e: m for e, m in missing.items() if m}
    assert not missing, f"pyproject.toml: the book extra lacks packages of {missing}"
    assert {"jupyter-book", "papermill", "pandas", "tqdm"} <= set(groups["book"])


def test_a_package_named_twice_has_one_range(named):
    """An extra repeating another's package (book repeats the user extras) states the same
    range, so that the two cannot drift apart."""
    differ = {n: [(g, str(s)) for g, s in uses] for n, uses in named.items()
              if len({str(s) for _, s in uses}) > 1}
    assert not differ, f"pyproject.toml: packages with different ranges in two groups: {differ}"


def test_every_range_admits_the_locks_pin(named, lock):
    for name, uses in named.items():
        assert name in lock, (f"{name} (pyproject.toml {uses[0][0]}) is not pinned in "
                              f"requirements/lock.txt; add its exact version there")
        for group, spec in uses:
            assert spec.contains(lock[name], prereleases=True), (
                f"{name}: pyproject.toml {group} asks for {spec}, but requirements/lock.txt "
                f"pins {lock[name]}; widen the range or move the pin")


def test_environment_yml_agrees_with_the_lock(named, conda_pins, lock):
    """environment.yml pins exactly the packages pyproject.toml names, each at the lock's
    version."""
    wrong = {n: (v, lock.get(n, "not in the lock")) for n, v in conda_pins.items()
             if lock.get(n) != v}
    assert not wrong, f"environment.yml pins differ from the lock (environment.yml, lock): {wrong}"
    assert set(conda_pins) == set(named), (
        f"environment.yml: expected a pin for every package pyproject.toml names; missing "
        f"{sorted(set(named) - set(conda_pins))}, extra {sorted(set(conda_pins) - set(named))}")


def test_environment_yml_uses_the_lock(conda_pip):
    assert "-c requirements/lock.txt" in conda_pip and "-e ." in conda_pip


def test_python_version_agrees(project, conda_env):
    """The library claims Python 3.10 and later; the book's environment is 3.11."""
    requires = SpecifierSet(project["requires-python"])
    conda_python = next(d for d in conda_env["dependencies"]
                        if isinstance(d, str) and d.startswith("python="))
    minor = conda_python.split("=", 1)[1]
    assert requires.contains("3.10") and not requires.contains("3.9"), requires
    assert requires.contains(f"{minor}.0"), (f"requires-python {requires} excludes the book's "
                                             f"Python {minor} (environment.yml)")
    lock_header = (ROOT / "requirements" / "lock.txt").read_text().splitlines()[:3]
    assert any(f"Python {minor}" in line for line in lock_header), lock_header


def test_installed_versions_match_the_lock(named, lock):
    """The environment the tests run in is the locked one (local labels such as +cpu aside),
    for every package pyproject.toml names."""
    wrong = {}
    for name in named:
        try:
            got = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong[name] = (lock[name], "not installed")
            continue
        if got.split("+", 1)[0] != lock[name]:
            wrong[name] = (lock[name], got)
    assert not wrong, f"installed versions differ from the lock (locked, installed): {wrong}"


def test_parse_pins_rejects_loose_specifiers():
    for bad in ("numpy>=2", "numpy", "numpy~=2.4", "numpy==2.*", "numpy==2.4,<3"):
        with pytest.raises(AssertionError, match="expected an exact pin"):
            parse_pins([bad], "test")
    assert parse_pins(["Scikit_Learn==1.9.1"], "test") == {"scikit-learn": "1.9.1"}


def test_parse_ranges_rejects_pins_bare_names_and_repeats():
    for bad, why in (("numpy==2.4.6", "exact pin"), ("numpy", "expected a range"),
                     ("numpy>>2", "expected a requirement")):
        with pytest.raises(AssertionError, match=why):
            parse_ranges([bad], "test")
    with pytest.raises(AssertionError, match="listed twice"):
        parse_ranges(["numpy>=1", "NumPy<3"], "test")
    got = parse_ranges(["Scikit_Learn>=1.0", "numpy>=1.22,<3", "torch==2.*"], "test")
    assert set(got) == {"scikit-learn", "numpy", "torch"}
    assert got["numpy"].contains("2.4.6") and not got["numpy"].contains("3.0")
