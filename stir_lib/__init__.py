"""stir_lib: the thin shared library behind the book.

One concept per module: data, models, training, attacks, spectral, similarity,
inversion, stir, transfer, plotting, cache, results, run (the book's executor); input
checks live in validation, progress bars in progress. Notebooks hold the
experiments; this package holds the machinery.
"""

__version__ = "0.1.0"
