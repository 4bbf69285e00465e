"""stir_lib: the library behind the book, in floors (each imports only from below).

Plumbing: validation, progress, paths (the book's root and table of contents), threads,
scales, cache. Things: models, data (a registry of data sets), verdicts (the statistics
and generic rules behind every verdict). Measures and procedures: features (named layers
of any model), attacks, similarity (CKA), spectral (operator norms), training, inversion,
stir, transfer, checkpoints. Experiments: jobs (plans of cache entries), results
(scorecards), plotting, cluster (plans through submitit). The chapters: ``chapters``, one
module per chapter with its presets, helpers, plan, the paper's numbers and its claim rules.
The book's tooling sits on top in ``stir_lib.book`` (the runner, the site check, MathJax,
the PDF) and nothing in the library imports it.
"""

__version__ = "0.1.0"
