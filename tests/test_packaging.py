"""The library as something people install beside their own models: it runs on Python 3.10,
``import stir_lib`` and the STIR/CKA/attack/inversion/model modules import nothing optional,
the top-level package exports the entry points lazily, and progress bars need no tqdm.

(The wheel and a clean install are checked by tests/test_install.py.)
"""

from __future__ import annotations

import ast
import glob
import importlib
import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "stir_lib"

# Optional packages (pyproject.toml extras) that the core must not import when it is imported.
OPTIONAL = ("torchvision", "pandas", "tqdm", "matplotlib", "seaborn", "submitit", "skimage",
            "sklearn")
# What a user imports to use STIR, CKA, the attacks, inversion and the models.
ENTRY_MODULES = ("stir_lib.similarity", "stir_lib.batch_cka", "stir_lib.attacks",
                 "stir_lib.features", "stir_lib.models", "stir_lib.inversion", "stir_lib.stir")


# --------------------------------------------------------------------------- Python 3.10
# Standard-library names added in Python 3.11 or later (module -> names; None: the module).
NEWER_THAN_310 = {
    "tomllib": None, "wsgiref.types": None,
    "typing": {"Self", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type",
               "dataclass_transform", "Required", "NotRequired", "TypeVarTuple", "Unpack",
               "get_overloads", "clear_overloads", "override", "TypeAliasType", "ReadOnly",
               "TypeIs"},
    "datetime": {"UTC"},
    "enum": {"StrEnum", "ReprEnum", "EnumCheck", "FlagBoundary", "verify", "member",
             "nonmember", "global_enum", "show_flag_values", "property"},
    "asyncio": {"TaskGroup", "Runner", "timeout", "timeout_at", "Timeout", "Barrier",
                "BrokenBarrierError"},
    "contextlib": {"chdir"}, "hashlib": {"file_digest"}, "operator": {"call"},
    "math": {"cbrt", "exp2"}, "inspect": {"getmembers_static", "markcoroutinefunction"},
    "sys": {"exception"}, "logging": {"getLevelNamesMapping"}, "locale": {"getencoding"},
    "re": {"NOFLAG"}, "itertools": {"batched"}, "warnings": {"deprecated"},
    "copy": {"replace"},
}
NEWER_BUILTINS = {"ExceptionGroup", "BaseExceptionGroup"}
NEWER_METHODS = {"add_note"}    # BaseException.add_note (3.11)


def library_modules() -> list[Path]:
    """Every module of the library; the book's tooling (stir_lib/book/) may use 3.11."""
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "book" not in p.relative_to(PACKAGE).parts[:1]]


def newer_than_310(src: str, where: str = "<src>") -> list[str]:
    """What in ``src`` needs Python 3.11 or later: syntax (the parser's own 3.10 grammar, plus
    PEP 646 starred subscripts and annotations, which it lets through) and the names of
    NEWER_THAN_310 imported, or reached as ``module.name``. A static check: only 3.11 runs
    here. Methods and new arguments of old names are not seen, except ``.add_note``."""
    try:
        tree = ast.parse(src, where, feature_version=(3, 10))
    except SyntaxError as err:
        return [f"{where}:{err.lineno}: syntax newer than 3.10: {err.msg}"]
    found, aliases = [], {}     # local name -> standard-library module
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in NEWER_THAN_310 and NEWER_THAN_310[a.name] is None:
                    found.append(f"{line}: import {a.name} (3.11+)")
                aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            new = NEWER_THAN_310.get(node.module, set())
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if new is None or a.name in new or NEWER_THAN_310.get(full, 1) is None:
                    found.append(f"{line}: from {node.module} import {a.name} (3.11+)")
        elif isinstance(node, ast.Subscript):
            parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            if any(isinstance(p, ast.Starred) for p in parts):
                found.append(f"{line}: starred subscript (PEP 646, 3.11+)")
        elif isinstance(node, ast.arguments) and node.vararg is not None:
            if isinstance(node.vararg.annotation, ast.Starred):
                found.append(f"{line}: *args: *Ts annotation (PEP 646, 3.11+)")
        elif isinstance(node, ast.Name) and node.id in NEWER_BUILTINS:
            found.append(f"{line}: {node.id} (3.11+)")
        elif isinstance(node, ast.Attribute) and node.attr in NEWER_METHODS:
            found.append(f"{line}: .{node.attr} (3.11+)")
    for node in ast.walk(tree):      # module.name, once every alias is known
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = aliases.get(node.value.id)
            new = NEWER_THAN_310.get(module) if module else None
            if new and node.attr in new:
                found.append(f"{where}:{node.lineno}: {module}.{node.attr} (3.11+)")
    return found


def test_the_library_is_python_310():
    """Every library module parses with Python 3.10's grammar and uses no standard-library
    name added later. A static check, made with the tests' own Python 3.11 (the book's);
    the next test compiles with a real Python 3.10 where one is installed."""
    mods = library_modules()
    assert len(mods) > 30 and not any("book" in p.parts[-2:-1] for p in mods)
    found = [f for p in mods for f in newer_than_310(p.read_text(), str(p.relative_to(ROOT)))]
    assert not found, "the library needs Python 3.11 here:\n" + "\n".join(found)


def python_310() -> str | None:
    """A Python 3.10 interpreter that runs (on PATH, or one of pyenv's), else None."""
    found = [shutil.which("python3.10"),
             *sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.10*/bin/python3.10")))]
    for exe in filter(None, found):
        proc = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode == 0 and proc.stdout.strip() == "(3, 10)":
            return exe
    return None


def test_the_library_compiles_and_imports_under_python_310():
    """With a real Python 3.10 (no packages): every library module compiles, and
    ``import stir_lib`` (which needs no torch until an export is used) and its progress bars
    run."""
    exe = python_310()
    if exe is None:
        pytest.skip("no Python 3.10 interpreter here (python3.10 or ~/.pyenv/versions/3.10*); "
                    "test_the_library_is_python_310 checks statically")
    paths = [str(p.relative_to(ROOT)) for p in library_modules()]
    code = ("import json, sys\nbad = []\n"
            f"for p in {paths!r}:\n"
            "    try:\n        compile(open(p).read(), p, 'exec', dont_inherit=True)\n"
            "    except SyntaxError as e:\n        bad.append(f'{p}:{e.lineno}: {e.msg}')\n"
            "import stir_lib\nfrom stir_lib.progress import bar\n"
            "print(json.dumps([bad, 'torch' in sys.modules, sorted(stir_lib.__all__),"
            " list(bar(range(3)))]))")
    proc = subprocess.run([exe, "-E", "-s", "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)     # -E -s: no PYTHONPATH, no user site
    assert proc.returncode == 0, proc.stderr[-3000:]
    bad, torch_imported, exports, items = json.loads(proc.stdout.splitlines()[-1])
    assert bad == [], "Python 3.10 cannot compile:\n" + "\n".join(bad)
    assert not torch_imported and "stir" in exports and items == [0, 1, 2]


@pytest.mark.parametrize("src", [
    "import tomllib",
    "from datetime import UTC",
    "import datetime as dt\nnow = dt.datetime.now(dt.UTC)",
    "from typing import Self",
    "import typing\nx: typing.Self",
    "from enum import StrEnum",
    "import asyncio\nasyncio.TaskGroup()",
    "from wsgiref import types",
    "try:\n    pass\nexcept* ValueError:\n    pass",
    "raise ExceptionGroup('x', [])",
    "err = ValueError()\nerr.add_note('x')",
    "def f(*args: *Ts): pass",
    "x: tuple[*Ts]",
])
def test_the_310_check_finds_planted_311_code(src):
    assert newer_than_310(src), f"not found: {src!r}"


def test_the_310_check_passes_310_code():
    src = ("import datetime\nfrom typing import Optional\nimport enum\n"
           "match 1:\n    case 1: pass\n"
           "t = datetime.timezone.utc\nx: int | None = None\nclass E(str, enum.Enum): pass\n"
           "def f(*args: int): pass\n")
    assert newer_than_310(src) == []


# --------------------------------------------------------------------------- lazy imports
_PROBE = """
import json, sys
out = {}
import stir_lib
out["after import stir_lib"] = sorted(m for m in sys.modules
                                      if m.split(".")[0] in ("torch", "numpy", *OPTIONAL))
import numpy, torch                  # torch's own optional imports (tqdm in torch.hub) are not ours
base = set(sys.modules)
importers = {}


class Recorder:
    # Note which module of the library imports an optional package (the import then goes on).
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in OPTIONAL:
            f = sys._getframe(1)
            while f is not None and f.f_code.co_filename.startswith("<frozen"):
                f = f.f_back
            who = f.f_globals.get("__name__", "?") if f is not None else "?"
            if who.startswith("stir_lib"):
                importers.setdefault(top, who)
        return None


sys.meta_path.insert(0, Recorder())
for name in ENTRY:
    __import__(name)
    new = sorted({m.split(".")[0] for m in set(sys.modules) - base} & set(OPTIONAL))
    out[name] = new
out["importers"] = importers
out["stir callable"] = callable(stir_lib.stir) and stir_lib.stir is sys.modules["stir_lib.stir"]
print(json.dumps(out))
"""


def test_the_entry_modules_import_nothing_optional():
    """``import stir_lib`` imports neither torch nor numpy, and importing the modules a user
    needs (STIR, CKA, attacks, inversion, layers, models) imports none of the optional
    packages (run in a fresh interpreter, which reports what each import added to
    sys.modules and which library module asked for an optional package)."""
    code = f"OPTIONAL = {OPTIONAL!r}\nENTRY = {ENTRY_MODULES!r}\n" + _PROBE
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["after import stir_lib"] == [], out["after import stir_lib"]
    bad = {m: out[m] for m in ENTRY_MODULES if out[m]}
    assert not bad, (f"importing these modules imports optional packages {bad}; first asked "
                     f"for by {out['importers']}: import them inside the functions that use "
                     f"them")
    assert out["stir callable"], "stir_lib.stir is not callable after importing the module first"


# --------------------------------------------------------------------------- exports
def test_every_export_resolves_to_its_modules_object():
    import stir_lib
    assert len(stir_lib.__all__) == len(set(stir_lib.__all__))
    assert set(stir_lib.__all__) == set(stir_lib._EXPORTS)
    for name in stir_lib.__all__:
        module = importlib.import_module(f"stir_lib.{stir_lib._EXPORTS[name]}")
        got = getattr(stir_lib, name)
        expected = module if name == "stir" else getattr(module, name)
        assert got is expected, (name, got, expected)
        assert name in module.__all__, f"stir_lib exports {name}, which {module.__name__} does not"


def test_the_exports_cover_the_entry_points():
    import stir_lib
    needed = {"stir", "stir_matrix", "STIRResult", "invert", "representation", "layer_names",
              "linear_cka", "debiased_cka", "rbf_cka", "MinibatchCKA", "LinearCKASums", "pgd",
              "lbfgs_min_distortion", "create_model", "ImageModel"}
    assert needed <= set(stir_lib.__all__), sorted(needed - set(stir_lib.__all__))
    assert set(stir_lib.__all__) <= set(dir(stir_lib))
    assert "__version__" in dir(stir_lib) and "_EXPORTS" not in dir(stir_lib)


def test_an_unknown_attribute_names_the_module():
    import stir_lib
    with pytest.raises(AttributeError, match=r"module 'stir_lib' has no attribute 'no_such'"):
        stir_lib.no_such   # noqa: B018
    assert not hasattr(stir_lib, "invertt")
    with pytest.raises(ImportError):
        exec("from stir_lib import no_such", {})


def test_stir_is_the_module_and_calls_the_function():
    """``stir_lib.stir`` is the module stir_lib.stir, and calling it calls stir_lib.stir.stir
    (the same signature, the same errors)."""
    import stir_lib.stir as module
    from stir_lib import stir
    assert stir is module is sys.modules["stir_lib.stir"]
    assert inspect.signature(stir) == inspect.signature(module.stir)
    assert stir.stir_matrix is module.stir_matrix
    errors = []
    for call in (stir, module.stir):
        with pytest.raises(TypeError) as err:
            call(object(), object(), None)
        errors.append(str(err.value))
    assert errors[0] == errors[1] and "m1" in errors[0], errors


def test_stir_is_callable_when_reached_through_the_package_first():
    code = ("import sys, stir_lib\nf = stir_lib.stir\nimport stir_lib.stir as S\n"
            "from stir_lib import stir as g\nimport stir_lib.chapters\n"
            "assert f is S is g is stir_lib.stir is sys.modules['stir_lib.stir'], (f, S, g)\n"
            "assert callable(f) and f.stir_matrix is stir_lib.stir_matrix\nprint('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


# --------------------------------------------------------------------------- optional packages
def test_progress_bars_work_without_tqdm(monkeypatch):
    from stir_lib import progress
    monkeypatch.setitem(sys.modules, "tqdm", None)      # `from tqdm import tqdm` fails
    b = progress.bar(range(3), desc="x", progress=True)
    assert isinstance(b, progress.SilentBar)
    assert list(b) == [0, 1, 2] and b.n == 3 and len(b) == 3
    with progress.bar(total=5, desc="y") as b:
        b.update(2)
        b.update()
        b.set_postfix(loss="0.1")
        b.set_description("z")
    assert b.n == 3 and len(b) == 5
    with pytest.raises(TypeError, match="expected an iterable"):
        list(progress.bar(total=2))


def test_progress_bars_are_tqdms_when_it_is_there():
    tqdm = pytest.importorskip("tqdm")
    from stir_lib import progress
    b = progress.bar(range(2), progress=False)
    assert isinstance(b, tqdm.tqdm) and b.disable and list(b) == [0, 1]


def test_the_silent_bar_has_what_the_library_calls():
    """Every method the library calls on a bar (``b = bar(...)``; ``b.update(...)``) exists
    on SilentBar."""
    from stir_lib.progress import SilentBar
    used = set()
    for path in library_modules():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            bars = {t.id for n in ast.walk(fn) if isinstance(n, ast.Assign)
                    and isinstance(n.value, ast.Call) and getattr(n.value.func, "id", "") == "bar"
                    for t in n.targets if isinstance(t, ast.Name)}
            used |= {n.attr for n in ast.walk(fn) if isinstance(n, ast.Attribute)
                     and isinstance(n.value, ast.Name) and n.value.id in bars}
    assert {"update", "close"} <= used, used      # the scan finds the library's bars
    missing = sorted(a for a in used if not hasattr(SilentBar, a))
    assert not missing, f"SilentBar lacks {missing}, which the library calls on its bars"


def test_torchvision_models_say_which_extra_installs_it(monkeypatch):
    from stir_lib import models
    for name in ("torchvision", "torchvision.models"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"alexnet: expected the optional package "
                                          r"'torchvision'.*pip install 'stir_lib\[vision\]'"):
        models.create_model("alexnet")
    with pytest.raises(ImportError, match=r"stir_lib\[vision\]"):
        models.imagenet_resnet("resnet18")
    assert models.create_model("fc100-100-10") is not None   # the library's own models need none


def test_the_lazy_torchvision_builders_are_torchvisions():
    tv_models = pytest.importorskip("torchvision.models")
    import torch

    from stir_lib.models import IMAGENET_RESNETS
    for arch in ("resnet18", "wide_resnet50_2"):
        with torch.device("meta"):
            ours = IMAGENET_RESNETS[arch](num_classes=7)
            theirs = getattr(tv_models, arch)(num_classes=7)
        assert type(ours) is type(theirs)
        assert ({k: v.shape for k, v in ours.state_dict().items()}
                == {k: v.shape for k, v in theirs.state_dict().items()})
