"""The whole book as one A4 PDF, printed by the same headless Chromium as the site check.

:func:`build_pdf` builds the staged book again with Sphinx's ``singlehtml`` builder and
prints that one page to an A4 PDF after MathJax has typeset it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from ..paths import build_dir, toc_notebooks, toc_pages
from .check import PageReport, _PROBE, _add_load_failures, browser, failures, open_page, serve, unrendered_math
from .mathjax import MATHJAX_ENTRY, MATHJAX_STATIC, STATIC_DIR
from .run import render

__all__ = ["stage_is_current", "build_pdf"]

def _jupyter_book() -> str:
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    if jb is None:
        raise SystemExit(f"[pdf] no jupyter-book next to {sys.executable}; run `make setup`")
    return jb


def stage_is_current(root: Path, stage: Path) -> bool:
    """True when ``stage`` holds what :func:`stir_lib.book.run.render` would stage now."""
    import filecmp

    executed = build_dir(root) / "executed" / "notebooks"
    pairs = [(root / f, stage / f) for f in ("_config.yml", "_toc.yml")]
    pairs += [(p, stage / p.relative_to(root)) for p in (root / "book").rglob("*")
              if p.is_file()]
    pairs += [(executed / f"{n}.ipynb", stage / "notebooks" / f"{n}.ipynb")
              for n in toc_notebooks(root)]
    if not (stage / STATIC_DIR / MATHJAX_STATIC / MATHJAX_ENTRY).is_file():
        return False
    return all(b.is_file() and a.is_file() and filecmp.cmp(a, b, shallow=False)
               for a, b in pairs)


def build_pdf(root: Path, out: Path) -> Path:
    """The whole book as one A4 PDF, from the staged sources of the last render.

    Renders first when the stage is missing or older than the executed notebooks or the
    book's sources. Fails, without writing a PDF, when the single page has unrendered
    math, an image that did not load, a script error or a request to another host.
    """
    build = build_dir(root)
    stage = build / "stage"
    if not stage_is_current(root, stage):
        print(f"[pdf] {stage} is missing or stale: rendering first", flush=True)
        render(root)
    jb_out = build / "pdf" / "jb"
    cmd = [_jupyter_book(), "build", str(stage), "--builder", "singlehtml",
           "--path-output", str(jb_out), "-W", "-n", "--keep-going"]
    print("[pdf]", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if proc.returncode:
        raise SystemExit(f"[pdf] jupyter-book --builder singlehtml failed (exit "
                         f"{proc.returncode}); run the command above to see its messages")
    single = jb_out / "_build" / "singlehtml"
    book_page = f"{toc_pages(root)[0]}.html"  # the root document holds the whole book
    if not (single / book_page).is_file():
        raise SystemExit(f"[pdf] expected the single page {single / book_page}, got none; "
                         f"see the jupyter-book command above")
    # Sphinx writes the page under the root document's folder (book/) but with links
    # relative to the build's top, so it is read from a copy at the top.
    shutil.copy2(single / book_page, single / "book.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = PageReport("singlehtml/book.html")
    with serve(single) as base_url, browser() as context:
        page = open_page(context, base_url + "book.html", report, mathjax_timeout_s=20)
        found = page.evaluate(_PROBE)
        # singlehtml has no search index; the theme asks for one anyway. Paper has no search.
        report.missing = {u: s for u, s in report.missing.items()
                          if urlsplit(u).path != "/searchindex.js"}
        report.problems.extend(unrendered_math(found["texts"]))
        report.problems.extend(f"math error: {e}" for e in found["mathErrors"])
        _add_load_failures(report, found["brokenImages"])
        if report.problems:
            raise SystemExit("[pdf] FAILED, no PDF written:\n" + failures([report]))
        page.emulate_media(media="print")
        page.pdf(path=str(out), format="A4", print_background=True,
                 margin={"top": "16mm", "bottom": "16mm", "left": "14mm", "right": "14mm"},
                 display_header_footer=True, header_template="<span></span>",
                 footer_template='<div style="font-size:8px;width:100%;text-align:center">'
                                 '<span class="pageNumber"></span> / '
                                 '<span class="totalPages"></span></div>')
        page.close()
    return out


