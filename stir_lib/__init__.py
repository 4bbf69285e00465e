"""stir_lib: the thin shared library behind the book.

One concept per module: data, models, features (named layers of any model), training,
attacks, spectral, similarity, inversion, stir, transfer, verdicts (the rules behind every
verdict), paper (the papers' numbers), jobs and cluster (plans of cache entries, run
through submitit), cache, threads, plotting, results, run (the book's executor), site
(MathJax, the browser check, the PDF); input checks live in validation, progress bars in
progress; ``chapters`` holds each chapter's presets and plan. Notebooks hold the
experiments' questions, evidence and verdicts; this package holds the machinery.
"""

__version__ = "0.1.0"
