"""The rendered book as a self-contained site: its command line.

    python -m stir_lib.book.site check [--site _build/html] [--screenshots _build/screenshots]
    python -m stir_lib.book.site pdf [--out _build/pdf/book.pdf]
    python -m stir_lib.book.site install-mathjax          # make setup runs this

The book is meant to be read (and checked) on a machine with no network, so no page may
fetch anything from another host: MathJax is served by the site (:mod:`.mathjax`), every
page is opened in headless Chromium with other hosts blocked (:mod:`.check`; exit 1 on a
problem), and the PDF is printed by the same browser (:mod:`.pdf`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..paths import build_dir, repo_root, toc_notebooks, toc_pages
from .check import check_site, failures
from .mathjax import MATHJAX_VERSION, ensure_mathjax
from .pdf import build_pdf

__all__ = ["main"]

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stir_lib.book.site", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="open every page of _toc.yml in headless Chromium")
    check.add_argument("--site", type=Path, help="the built site (default: _build/html)")
    check.add_argument("--screenshots", type=Path,
                       help="folder for full-page PNGs (default: _build/screenshots)")
    pdf = sub.add_parser("pdf", help="the whole book as one A4 PDF")
    pdf.add_argument("--out", type=Path, help="default: _build/pdf/book.pdf")
    sub.add_parser("install-mathjax", help=f"fetch and verify mathjax@{MATHJAX_VERSION}")
    args = parser.parse_args(argv)
    try:
        _run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:  # says what to do: no trace
        raise SystemExit(f"[site] {err}") from None


def _run(args: argparse.Namespace) -> None:
    if args.command == "install-mathjax":
        print(f"[site] mathjax@{MATHJAX_VERSION}: {ensure_mathjax()}")
        return
    root = repo_root()
    build = build_dir(root)
    if args.command == "check":
        site = args.site or build / "html"
        t0 = time.perf_counter()
        reports = check_site(site, toc_pages(root), args.screenshots or build / "screenshots",
                             echo=True, stamped=[f"notebooks/{n}" for n in toc_notebooks(root)])
        bad = [r for r in reports if r.problems]
        if bad:
            raise SystemExit(f"[site] check FAILED on {len(bad)} of {len(reports)} page(s):\n"
                             + failures(reports))
        print(f"[site] {len(reports)} pages ok in {time.perf_counter() - t0:.1f} s "
              f"(screenshots in {args.screenshots or build / 'screenshots'})")
    elif args.command == "pdf":
        t0 = time.perf_counter()
        out = build_pdf(root, args.out or build / "pdf" / "book.pdf")
        print(f"[pdf] {out} ({out.stat().st_size / 1e6:.1f} MB) in "
              f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
