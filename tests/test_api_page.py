"""The API page (book/api.md) documents every entry point the package exports.

The page is generated from docstrings by Sphinx's autodoc when the book is rendered
(warnings fail that build; the site check opens the page). This test keeps the page's list
of modules in step with ``stir_lib.__all__``: an export whose module is not on the page
would be missing from the reference.
"""

from __future__ import annotations

import importlib
import re

from stir_lib.paths import repo_root

PAGE = repo_root() / "book" / "api.md"


def documented_modules() -> list[str]:
    return re.findall(r"^\.\. automodule:: (stir_lib[\w.]*)$", PAGE.read_text(), re.M)


def test_every_export_is_on_the_api_page():
    import stir_lib
    on_page = documented_modules()
    assert len(on_page) == len(set(on_page)) and on_page, on_page
    missing = []
    for name in stir_lib.__all__:
        obj = getattr(stir_lib, name)
        home = obj.__name__ if name == "stir" else obj.__module__
        shown = [m for m in on_page if name in getattr(importlib.import_module(m), "__all__", [])]
        if home not in on_page and not shown:
            missing.append(f"{name} ({home})")
    assert not missing, f"exports not on book/api.md: {missing}; add their module there"


def test_the_api_page_is_in_the_book():
    toc = (repo_root() / "_toc.yml").read_text()
    assert re.search(r"^\s*- file: book/api$", toc, re.M)
    config = (repo_root() / "_config.yml").read_text()
    assert "sphinx.ext.autodoc" in config and "sphinx.ext.napoleon" in config
