"""The book's tooling, on top of the library and imported by nothing in it.

* :mod:`.run`: ``python -m stir_lib.book.run``: executes the chapters' notebooks with
  papermill (scale and parameters), renders the site with Jupyter Book, and plans or
  computes a chapter's cache entries (``plan``, ``warm``);
* :mod:`.site`: ``python -m stir_lib.book.site``: the browser check of the built site, the
  PDF, the MathJax install;
* :mod:`.mathjax` (the pinned MathJax the site serves), :mod:`.check` (every page in
  headless Chromium), :mod:`.pdf` (the whole book as one PDF).
"""
