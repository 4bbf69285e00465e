"""The library's layout: a floor for every module, imports only downwards, no circle, and the
book's tooling (``stir_lib.book``) on top, imported by nothing in the library.

Every ``import`` counts, those inside functions too. Run ``python tests/test_layout.py`` to
print each module's floor and what it imports.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stir_lib"

# Floors, bottom first. A module may import modules of its own floor or below, never above.
FLOORS = [
    ["stir_lib.validation", "stir_lib.progress", "stir_lib.paths"],          # plumbing
    ["stir_lib.threads", "stir_lib.scales", "stir_lib.cache"],
    ["stir_lib.models", "stir_lib.data", "stir_lib.verdicts"],                # things
    ["stir_lib.features", "stir_lib.straight_relu", "stir_lib.attacks", "stir_lib.similarity",
     "stir_lib.batch_cka", "stir_lib.spectral"],
    ["stir_lib.training", "stir_lib.inversion"],                              # procedures
    ["stir_lib.stir", "stir_lib.stir_batches", "stir_lib.stir_result", "stir_lib.baselines",
     "stir_lib.transfer", "stir_lib.checkpoints"],
    ["stir_lib.jobs", "stir_lib.results", "stir_lib.plotting"],               # experiments
    ["stir_lib.cluster"],
    ["stir_lib.chapters"],                                                    # the chapters
    ["stir_lib.book"],                                                        # the book's tooling
]
MAX_LINES = 600


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The library modules that ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [(target, [a.name for a in node.names])]
        else:
            continue
        for target, names in targets:
            if not target.startswith("stir_lib"):
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            if subs:
                found.update(subs)
            if len(subs) < len(names) or not names:
                while target not in known and "." in target:
                    target = target.rpartition(".")[0]
                found.add(target)
    found.discard(name)
    found.discard("stir_lib")   # the root package holds only its docstring and exports
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {n: imports(n, p, set(mods)) for n, p in mods.items()}


def floor(name: str) -> int:
    best = None
    for i, prefixes in enumerate(FLOORS):
        for p in prefixes:
            if name == p or name.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    if best is None:
        raise AssertionError(f"{name}: no floor in tests/test_layout.py's FLOORS; give it one")
    return best[0]


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every circle of imports found by a depth-first search (one per back edge)."""
    found, state, stack = [], {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(g.get(u, ())):
            if state.get(v) == "open":
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(g):
        if u not in state:
            visit(u)
    return found


def test_every_module_has_a_floor():
    for name in graph():
        if name != "stir_lib":
            floor(name)


def test_imports_run_only_downwards():
    g = graph()
    upward = [f"{u} (floor {floor(u)}) imports {v} (floor {floor(v)})"
              for u, vs in g.items() if u != "stir_lib" for v in sorted(vs) if floor(v) > floor(u)]
    assert not upward, "imports running upwards:\n" + "\n".join(upward)


def test_no_circle_of_imports():
    found = cycles(graph())
    assert not found, "circles of imports:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_books_tooling_is_imported_by_nothing_in_the_library():
    g = graph()
    bad = [f"{u} imports {v}" for u, vs in g.items() for v in vs
           if v.startswith("stir_lib.book") and not u.startswith("stir_lib.book")]
    assert not bad, "\n".join(bad)


def test_each_chapter_has_its_module():
    import yaml

    toc = yaml.safe_load((PACKAGE.parent / "_toc.yml").read_text())
    chapters = {c["file"].split("/")[1] for part in toc["parts"] for c in part["chapters"]
                if c["file"].startswith("notebooks/")}
    from stir_lib.chapters import NOTEBOOK_MODULE
    summary = {"scorecard", "reproducibility", "stir_your_models"}   # pages, not experiments
    missing = sorted(chapters - summary - set(NOTEBOOK_MODULE))
    assert not missing, f"notebooks with no chapter module: {missing}"
    for nb, module in NOTEBOOK_MODULE.items():
        assert (PACKAGE / "chapters" / f"{module}.py").is_file(), (nb, module)


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_over_the_line_limit(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines (limit {MAX_LINES}): split it at a seam"


# Modules whose public names are reached another way, and why their __all__ is left as is.
ALL_EXCEPTIONS = {
    "stir_lib.models": "the architecture builders are public through create_model(name), and "
                       "models.py's source is part of every trained model's cache key",
}


@pytest.mark.parametrize("name", sorted(n for n in modules() if n not in ("stir_lib", "stir_lib.book")))
def test_all_lists_the_public_names(name):
    """``__all__`` names what exists, and every public class, function and CONSTANT the
    module defines is in it."""
    import importlib

    mod = importlib.import_module(name)
    assert hasattr(mod, "__all__"), f"{name} has no __all__"
    bogus = [a for a in mod.__all__ if not hasattr(mod, a)]
    assert not bogus, f"{name}.__all__ names what does not exist: {bogus}"
    if name in ALL_EXCEPTIONS:
        return
    tree = ast.parse(modules()[name].read_text())
    public = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    for n in tree.body:
        targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else []
        public += [t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper()]
    missing = [p for p in public if not p.startswith("_") and p not in mod.__all__]
    assert not missing, f"{name} defines public names missing from __all__: {missing}"


def test_the_checker_finds_a_planted_circle_and_an_upward_import():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert cycles(g) == [["a", "b", "c", "a"]]
    assert floor("stir_lib.book.run") > floor("stir_lib.chapters.stir") > floor("stir_lib.models")


if __name__ == "__main__":
    g = graph()
    for name in sorted(g, key=lambda n: (floor(n) if n != "stir_lib" else -1, n)):
        f = floor(name) if name != "stir_lib" else "-"
        print(f"[{f}] {name}: {', '.join(sorted(g[name])) or '-'}")
    sys.exit(0)
