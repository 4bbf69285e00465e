"""stir_lib: the thin shared library behind the book.

One concept per module: data, models, training, attacks, spectral, similarity,
inversion, stir, transfer, plotting, cache, results; input checks live in
validation. Notebooks hold the experiments; this package holds the machinery.
"""

__version__ = "0.1.0"
