"""Where the book's files are: its root, its build folder, the pages of its table of
contents, and a file's SHA-256.

The bottom of the library's layering: it imports nothing from ``stir_lib``, so every
module (the library's results, the book's runner and site check) can ask it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["repo_root", "build_dir", "toc_files", "toc_notebooks", "toc_pages", "sha256_file"]


def repo_root() -> Path:
    """The folder holding _toc.yml: from $STIR_ROOT, the working directory or this file."""
    candidates = [os.environ.get("STIR_ROOT"), Path.cwd(), *Path.cwd().parents,
                  Path(__file__).resolve().parents[1]]
    for c in candidates:
        if c and (Path(c) / "_toc.yml").exists():
            return Path(c).resolve()
    raise FileNotFoundError("could not find the book's root (a folder with _toc.yml); "
                            "run from the repository or set STIR_ROOT")


def build_dir(root: Path | None = None) -> Path:
    """``$STIR_BUILD`` if set, else ``<root>/_build``."""
    env = os.environ.get("STIR_BUILD")
    return Path(env).resolve() if env else (root or repo_root()) / "_build"


def toc_files(root: Path) -> list[str]:
    """Every page of ``_toc.yml`` as written there (the root first, then each ``file``
    entry in order), without duplicates."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files: list[str] = [str(toc["root"])] if "root" in toc else []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(str(node["file"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc)
    return list(dict.fromkeys(files))


def toc_pages(root: Path) -> list[str]:
    """Every page of ``_toc.yml``, root first, without a suffix (``notebooks/transfer``)."""
    names = [f.removesuffix(".md").removesuffix(".ipynb") for f in toc_files(root)]
    return list(dict.fromkeys(names))


def toc_notebooks(root: Path) -> list[str]:
    """Notebook names (stems under notebooks/) in _toc.yml order."""
    return [p.split("/", 1)[1] for p in toc_pages(root) if p.startswith("notebooks/")]


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
